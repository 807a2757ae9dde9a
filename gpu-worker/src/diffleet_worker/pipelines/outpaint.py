"""Outpainting: the init image on a larger canvas, the new area painted by the inpaint
pipeline over the whole canvas (so it continues the image), the original pixel-exact
beyond the mask's feather."""

from typing import Any

from PIL import Image

from diffleet_worker.images import outpaint_canvas, outpaint_mask
from diffleet_worker.pipelines.common import Generation
from diffleet_worker.pipelines.inpaint import paint


def run(base: Any, generation: Generation) -> list[Image.Image]:
    # 1. Check inputs.
    pad = generation.spec.outpaint
    if generation.init_image is None or pad is None:
        raise ValueError("initImage and outpaint are required for outpaint")
    # 2. Grow the canvas and mask the new area.
    canvas = outpaint_canvas(generation.init_image, pad)
    mask = outpaint_mask(generation.init_image.size, pad)
    # 3. Paint it.
    return paint(base, generation, canvas, mask)
