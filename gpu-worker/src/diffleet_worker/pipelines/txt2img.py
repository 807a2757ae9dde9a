"""Text to image, optionally guided by ControlNets, optionally in two passes (hires.py);
guided by T2I-Adapters, their own pipeline (adapter.py)."""

from typing import Any

from diffusers import AutoPipelineForText2Image
from PIL import Image

from diffleet_worker.pipelines import adapter, hires
from diffleet_worker.pipelines.common import Generation, call_options, configure


def run(base: Any, generation: Generation) -> list[Image.Image]:
    spec = generation.spec
    if generation.controls is not None and generation.controls.adapters:
        return adapter.run(base, generation)
    # 1. Derive the task pipeline from the hot base pipeline (shared modules, no copy).
    pipeline = AutoPipelineForText2Image.from_pipe(base, **generation.components)
    configure(pipeline, base, generation)
    if spec.hires_fix is not None:
        return hires.run(base, pipeline, generation, spec.hires_fix)
    # 2. Denoise and decode.
    options = call_options(generation) | {"width": spec.width, "height": spec.height}
    if generation.controls is not None:
        options |= generation.controls.options("image")
    images: list[Image.Image] = pipeline(**options).images
    return images
