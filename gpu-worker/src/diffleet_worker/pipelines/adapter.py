"""Text to image guided by T2I-Adapters: diffusers' StableDiffusionAdapterPipeline (sd15)
or StableDiffusionXLAdapterPipeline (sdxl), made from the hot base pipeline's modules
(shared, not copied) and the run's adapter (controls.py: one T2IAdapter, or a
MultiAdapter of several). Admission keeps adapters to mode txt2img, without hiresFix,
without a guidance window (they steer every step), and without image prompts on sd15.

These pipelines report steps through diffusers' older per-step `callback`, not
callback_on_step_end, and have no interrupt flag: a cancelled run stops at the end of
its step by the callback raising."""

from typing import Any

import torch
from diffusers import (
    StableDiffusionAdapterPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLAdapterPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from diffleet_worker.controls import Controls
from diffleet_worker.pipelines.common import Generation, call_options, configure
from diffleet_worker.runner import JobCancelledError

# The adapter pipeline of each hot base pipeline's class.
ADAPTER_PIPELINES: dict[type, Any] = {
    StableDiffusionPipeline: StableDiffusionAdapterPipeline,
    StableDiffusionXLPipeline: StableDiffusionXLAdapterPipeline,
}
StepCallback = Any  # diffusers' callback(step index, timestep, latents) -> None


def adapters(generation: Generation) -> Controls:
    """The run's T2I-Adapters; an adapter pipeline has nothing to run without them."""
    if generation.controls is None or not generation.controls.adapters:
        raise ValueError("an adapter pipeline needs the run's T2I-Adapters")
    return generation.controls


def pipeline_for(base: Any, generation: Generation) -> Any:
    """The adapter pipeline around `base`'s modules, the run's adapter and VAE override.
    DiffusionPipeline.from_pipe casts every module, shared ones too, to its `dtype`
    argument: the hot pipeline's own keeps them as they are."""
    pipeline_class = ADAPTER_PIPELINES[type(base)]
    return pipeline_class.from_pipe(
        base, adapter=adapters(generation).model, dtype=base.dtype, **generation.components
    )


def run(base: Any, generation: Generation) -> list[Image.Image]:
    spec = generation.spec
    controls = adapters(generation)
    pipeline = configure(pipeline_for(base, generation), base, generation)
    options = call_options(generation)
    del options["callback_on_step_end"], options["callback_on_step_end_tensor_inputs"]
    options |= {
        "width": spec.width,
        "height": spec.height,
        "callback": step_callback(pipeline, generation),
        "callback_steps": 1,
    }
    options |= controls.options("image")
    images: list[Image.Image] = pipeline(**options).images
    return images


def step_callback(pipeline: Any, generation: Generation) -> StepCallback:
    """The per-step callback: each step reported with the latents; JobCancelledError once
    the report asked the pipeline to stop."""
    steps = generation.spec.steps

    def on_step(index: int, _: Any, latents: torch.Tensor) -> None:
        generation.on_step(pipeline, index + 1, steps, latents)
        if getattr(pipeline, "_interrupt", False):
            raise JobCancelledError

    return on_step
