"""Image to image: the init image, noised to `strength`, then denoised toward the prompt."""

from typing import Any

from diffusers import AutoPipelineForImage2Image
from PIL import Image

from diffleet_worker.pipelines.common import Generation, call_options, configure


def run(base: Any, generation: Generation) -> list[Image.Image]:
    # 1. Check inputs.
    if generation.init_image is None:
        raise ValueError("initImage is required for img2img")
    # 2. Derive the task pipeline from the hot base pipeline (shared modules, no copy).
    pipeline = AutoPipelineForImage2Image.from_pipe(base, **generation.components)
    configure(pipeline, base, generation)
    # 3. Denoise and decode.
    options = call_options(generation) | {
        "image": generation.init_image,
        "strength": generation.strength,
    }
    if generation.controls is not None:
        options |= generation.controls.options("control_image")
    images: list[Image.Image] = pipeline(**options).images
    return images
