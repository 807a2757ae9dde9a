"""Hires fix (txt2img): the image drawn at width x height, upscaled by hiresFix.scale,
then denoised again by an img2img pass, which adds the detail a larger canvas holds
without the repeated subjects a model draws when asked for that size outright.

The upscale is of the latents (bilinear, as Automatic1111's "Latent" upscaler) when
hiresFix.latent, else of the decoded image (Lanczos). The second pass runs
hiresFix.steps scheduler steps of which it denoises the last `strength` (as img2img, and
A1111's hires pass, do); progress counts both passes' steps in one total.
"""

from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image
from PIL import Image

from diffleet_core.resources.generation_job import HiresFixSpec, hires_size
from diffleet_worker.pipelines.common import Generation, call_options, configure, step_end
from diffleet_worker.runner import JobCancelledError


def run(base: Any, first: Any, generation: Generation, hires: HiresFixSpec) -> list[Image.Image]:
    """Both passes, `first` being the configured txt2img pipeline."""
    spec = generation.spec
    size = hires_size(spec.width, spec.height, hires.scale)
    # 1. Derive the second pass' pipeline, to count its steps before the first pass.
    second = AutoPipelineForImage2Image.from_pipe(base, **generation.components)
    configure(second, base, generation, size)
    later = second_pass_steps(second, hires)
    # 2. The first pass, at width x height (decoded when no second step will run: a
    # strength too small for one step leaves the upscaled image as it is).
    options = call_options(generation) | {
        "width": spec.width,
        "height": spec.height,
        "callback_on_step_end": step_end(generation, after=later),
        "output_type": "latent" if hires.latent and later else "pil",
    }
    controls = generation.controls
    if controls is not None:
        options |= controls.options("image")
    drawn = first(**options).images
    if first.interrupt:
        raise JobCancelledError
    if not later:
        return upscaled(drawn, size, second.vae_scale_factor)  # type: ignore[no-any-return]
    # 3. Upscale and denoise again.
    options = call_options(generation) | {
        "image": upscaled(drawn, size, second.vae_scale_factor),
        "strength": hires.strength,
        "num_inference_steps": hires.steps,
        "callback_on_step_end": step_end(generation, before=first.num_timesteps),
    }
    if controls is not None:
        options |= controls.options("control_image", size)
    images: list[Image.Image] = second(**options).images
    return images


def second_pass_steps(pipeline: Any, hires: HiresFixSpec) -> int:
    """How many steps the img2img pass will denoise: what it computes when called."""
    pipeline.scheduler.set_timesteps(hires.steps, device=pipeline.device)
    timesteps, _ = pipeline.get_timesteps(hires.steps, hires.strength, pipeline.device)
    return len(timesteps)


def upscaled(drawn: Any, size: tuple[int, int], latent_factor: int) -> Any:
    """The first pass' latents (a tensor; the VAE shrinks each side by `latent_factor`)
    or images (PIL) at the hires size."""
    width, height = size
    if isinstance(drawn, torch.Tensor):
        return torch.nn.functional.interpolate(
            drawn, size=(height // latent_factor, width // latent_factor), mode="bilinear"
        )
    return [image.resize(size, Image.Resampling.LANCZOS) for image in drawn]
