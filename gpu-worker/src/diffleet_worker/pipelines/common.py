"""What every task needs: the resolved request, seeded generators, and the options that
configure a task pipeline derived from the hot base pipeline for one run."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from diffleet_core.resources.generation_job import GenerationJobSpec, hires_size
from diffleet_worker.controls import Controls
from diffleet_worker.device import DevicePolicy
from diffleet_worker.samplers import scheduler_for

# diffusers' callback_on_step_end: (pipeline, step index, timestep, tensors) -> tensors.
StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
# The runner's report of a step: (pipeline, step, total steps of the run, latents to
# preview or None). It asks the pipeline to stop (pipeline._interrupt) once cancelled.
StepReport = Callable[[Any, int, int, torch.Tensor | None], None]


@dataclass(frozen=True)
class Generation:
    """One run of a job, with everything fetched: images decoded, models loaded."""

    spec: GenerationJobSpec
    seeds: list[int]
    policy: DevicePolicy
    on_step: StepReport
    low_memory: bool = False
    strength: float = 0.75
    feather_radius: float = 0.0
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    controls: Controls | None = None
    vae: Any | None = None
    # txt2vid: the MotionAdapter the run adds to the checkpoint's UNet.
    motion_adapter: Any | None = None
    # One reference image per IP-Adapter loaded into the pipeline (ip_adapters.py).
    image_prompts: tuple[Image.Image, ...] = ()

    @property
    def components(self) -> dict[str, Any]:
        """Extra components for AutoPipeline*.from_pipe: the ControlNets and the VAE
        override, when there are: the hot base pipeline keeps its own. T2I-Adapters are
        the adapter pipeline's (pipelines/adapter.py)."""
        controls = self.controls
        controlnet = controls.model if controls is not None and not controls.adapters else None
        extra = {"controlnet": controlnet, "vae": self.vae}
        return {name: value for name, value in extra.items() if value is not None}


def step_end(generation: Generation, before: int = 0, after: int = 0) -> StepEnd:
    """diffusers' callback_on_step_end for one denoising pass of a run: its steps
    counted after the `before` steps of earlier passes, the run's total with the `after`
    steps of later ones (hiresFix runs two passes)."""

    def on_step_end(pipeline: Any, index: int, _: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = before + pipeline.num_timesteps + after
        generation.on_step(pipeline, before + index + 1, total, tensors["latents"])
        return tensors

    return on_step_end


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: the same seed draws the same noise on any device."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def configure(
    pipeline: Any, base: Any, generation: Generation, size: tuple[int, int] | None = None
) -> Any:
    """Sets the job's sampler and memory options on a task pipeline derived from `base`,
    for images of `size` (default: the job's width x height)."""
    spec = generation.spec
    width, height = size or (spec.width, spec.height)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = scheduler_for(spec.sampler, base.scheduler.config)
    if generation.low_memory or width * height > generation.policy.vae_tiling_pixels:
        pipeline.vae.enable_tiling()
    else:
        pipeline.vae.disable_tiling()
    # Slicing would replace the IP-Adapters' attention processors (their image tokens
    # then reach processors that take none): with image prompts the retry only tiles.
    if generation.low_memory and not generation.image_prompts:
        # Undone by DevicePolicy.restore_attention after the run.
        pipeline.enable_attention_slicing()
    return pipeline


def call_options(generation: Generation) -> dict[str, Any]:
    """The arguments every task pipeline call takes."""
    spec = generation.spec
    options: dict[str, Any] = {
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt or None,
        "num_inference_steps": spec.steps,
        "guidance_scale": spec.guidance_scale,
        "num_images_per_prompt": spec.batch_size,
        "generator": generators(generation.seeds),
        "callback_on_step_end": step_end(generation),
        "callback_on_step_end_tensor_inputs": ["latents"],
    }
    if generation.image_prompts:
        options["ip_adapter_image"] = list(generation.image_prompts)
    return options


def denoised_size(spec: GenerationJobSpec) -> tuple[int, int]:
    """The largest image a job's denoising makes (what its memory depends on): width x
    height, the outpaint canvas, or the hires fix's second pass."""
    if spec.hires_fix is not None:
        return hires_size(spec.width, spec.height, spec.hires_fix.scale)
    return spec.generated_size
