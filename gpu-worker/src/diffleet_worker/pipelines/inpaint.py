"""Inpainting: repaint the white part of the mask. The mask is feathered, and pixels
outside it are taken from the init image, so they come back unchanged."""

from typing import Any

from diffusers import AutoPipelineForInpainting
from PIL import Image

from diffleet_worker.images import feathered, keep_unmasked
from diffleet_worker.pipelines.common import Generation, call_options, configure


def run(base: Any, generation: Generation) -> list[Image.Image]:
    # 1. Check inputs.
    if generation.init_image is None or generation.mask_image is None:
        raise ValueError("initImage and maskImage are required for inpaint")
    mask = feathered(generation.mask_image, generation.feather_radius)
    # 2. Paint, keeping what lies outside the mask.
    return paint(base, generation, generation.init_image, mask)


def paint(
    base: Any, generation: Generation, image: Image.Image, mask: Image.Image
) -> list[Image.Image]:
    """`image` with its masked part repainted; pixels outside `mask` unchanged, those on
    its soft edge weighed by it (shared with outpaint, which paints a grown canvas)."""
    # 1. Derive the task pipeline from the hot base pipeline (shared modules, no copy).
    pipeline = AutoPipelineForInpainting.from_pipe(base, **generation.components)
    configure(pipeline, base, generation, image.size)
    # 2. Denoise and decode.
    options = call_options(generation) | {
        "image": image,
        "mask_image": mask,
        "strength": generation.strength,
        "width": image.width,
        "height": image.height,
    }
    if generation.controls is not None:
        options |= generation.controls.options("control_image")
    painted: list[Image.Image] = pipeline(**options).images
    # 3. Keep what lies outside the mask.
    return [keep_unmasked(image, result, mask) for result in painted]
