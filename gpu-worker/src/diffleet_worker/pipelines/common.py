"""What every task needs: the resolved request, seeded generators, and the options that
configure a task pipeline derived from the hot base pipeline for one run."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_worker.device import DevicePolicy
from diffleet_worker.samplers import scheduler_for

# diffusers' callback_on_step_end: (pipeline, step index, timestep, tensors) -> tensors.
StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Generation:
    """One run of a job, with everything fetched: images decoded, models loaded."""

    spec: GenerationJobSpec
    seeds: list[int]
    policy: DevicePolicy
    on_step_end: StepEnd
    low_memory: bool = False
    strength: float = 0.75
    feather_radius: float = 0.0
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    controlnet: Any | None = None
    control_image: Image.Image | None = None

    @property
    def controlnet_options(self) -> dict[str, Any]:
        """Extra components for AutoPipeline*.from_pipe: the ControlNet, when there is one."""
        return {"controlnet": self.controlnet} if self.controlnet is not None else {}


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: the same seed draws the same noise on any device."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def configure(pipeline: Any, base: Any, generation: Generation) -> Any:
    """Sets the job's sampler and memory options on a task pipeline derived from `base`."""
    spec = generation.spec
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = scheduler_for(spec.sampler, base.scheduler.config)
    if generation.low_memory or spec.width * spec.height > generation.policy.vae_tiling_pixels:
        pipeline.vae.enable_tiling()
    else:
        pipeline.vae.disable_tiling()
    if generation.low_memory:
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
        "callback_on_step_end": generation.on_step_end,
        "callback_on_step_end_tensor_inputs": ["latents"],
    }
    if spec.control_net is not None:
        options["controlnet_conditioning_scale"] = spec.control_net.conditioning_scale
    return options
