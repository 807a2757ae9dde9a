"""Super-resolution of finished images (upscale.model): a spandrel model (ESRGAN and the
other architectures spandrel detects from a safetensors file), or the Stable Diffusion
x4 upscaler pipeline (a diffusers folder), which denoises each tile guided by the prompt.
Either runs on tiles of upscale.tileSize input pixels (tiles.py), and the result is
resized from the model's own scale to upscale.scale."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from spandrel import ImageModelDescriptor

from diffleet_core.resources.generation_job import GenerationJobSpec, UpscaleSpec, upscaled_size
from diffleet_worker.pipelines.tiles import TileUpscaler, upscale_tiled
from diffleet_worker.runner import JobCancelledError

# Noise the SD x4 upscaler adds to its low-resolution input (diffusers' default).
NOISE_LEVEL = 20


def upscale(
    image: Image.Image,
    model: Any,
    spec: GenerationJobSpec,
    upscale_spec: UpscaleSpec,
    seed: int,
    cancelled: Callable[[], bool],
) -> Image.Image:
    """`image` upscaled by `model` (a spandrel descriptor or the x4 pipeline), tile by
    tile, then resized to upscale.scale; stops between tiles (and steps) once `cancelled`."""
    if isinstance(model, ImageModelDescriptor):
        scale, run = model.scale, spandrel_tiles(model)
    else:
        scale, run = model.vae_scale_factor, diffusion_tiles(model, spec, seed, cancelled)

    def tile(pixels: torch.Tensor) -> torch.Tensor:
        if cancelled():
            raise JobCancelledError
        return run(pixels)

    result = to_image(upscale_tiled(to_tensor(image), scale, upscale_spec.tile_size, tile))
    size = upscaled_size(image.width, image.height, upscale_spec.scale)
    return result if result.size == size else result.resize(size, Image.Resampling.LANCZOS)


def spandrel_tiles(model: ImageModelDescriptor[Any]) -> TileUpscaler:
    def run(pixels: torch.Tensor) -> torch.Tensor:
        upscaled: torch.Tensor = model(pixels.to(device=model.device, dtype=model.dtype))
        return upscaled.to(device="cpu", dtype=torch.float32)

    return run


def diffusion_tiles(
    pipeline: Any, spec: GenerationJobSpec, seed: int, cancelled: Callable[[], bool]
) -> TileUpscaler:
    """The x4 upscaler pipeline on one tile: the job's prompts, steps and guidance, the
    pipeline's own scheduler, and the image's seed (so every tile draws the same noise)."""

    def on_step(*_: Any) -> None:
        # This pipeline has only the legacy per-step callback: no interrupt flag.
        if cancelled():
            raise JobCancelledError

    def run(pixels: torch.Tensor) -> torch.Tensor:
        upscaled: torch.Tensor = pipeline(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt or None,
            image=to_image(pixels),
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            noise_level=NOISE_LEVEL,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pt",
            callback=on_step,
        ).images
        return upscaled.to(device="cpu", dtype=torch.float32)

    return run


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1]."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def to_image(pixels: torch.Tensor) -> Image.Image:
    """The first image of a (B, 3, H, W) batch in [0, 1], as RGB."""
    array = pixels[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy(), mode="RGB")
