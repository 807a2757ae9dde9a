"""Unit tests of the pure pieces of generation breadth: tiled upscaling with blended
seams, the outpaint canvas and mask, the default strengths and the memory estimate's
size."""

import numpy as np
import torch
from PIL import Image

from diffleet_core.resources.generation_job import GenerationJobSpec, OutpaintSpec
from diffleet_worker.diffusers_runner import denoising_strength
from diffleet_worker.images import outpaint_canvas, outpaint_mask
from diffleet_worker.pipelines.common import denoised_size
from diffleet_worker.pipelines.tiles import overlap_for, ramp, tile_starts, upscale_tiled

SCALE = 2


def smooth(pixels: torch.Tensor) -> torch.Tensor:
    """A simple upscaler that sees a 3x3 neighbourhood: a box blur, then nearest x2."""
    blurred = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(pixels, (1, 1, 1, 1), mode="replicate"), 3, stride=1
    )
    return torch.nn.functional.interpolate(blurred, scale_factor=SCALE, mode="nearest")


def noise_image(height: int, width: int) -> torch.Tensor:
    return torch.rand((1, 3, height, width), generator=torch.Generator().manual_seed(1))


def test_tiles_cover_the_side_evenly_from_end_to_end() -> None:
    assert tile_starts(100, 128, 16) == [0]
    assert tile_starts(200, 64, 8) == [0, 45, 91, 136]
    assert tile_starts(120, 64, 8) == [0, 56]
    assert overlap_for(512) == 64
    assert overlap_for(64) == 8


def test_ramp_rises_and_falls_over_the_overlap_only() -> None:
    weights = ramp(16, 4, 4)
    assert torch.all(weights[4:12] == 1)
    assert torch.all(torch.diff(weights[:4]) > 0)
    assert torch.all(torch.diff(weights[12:]) < 0)
    assert weights.min() > 0
    assert torch.all(ramp(16, 0, 0) == 1)


def test_a_tiled_upscale_equals_the_untiled_one_away_from_the_seams() -> None:
    image = noise_image(100, 150)
    whole = smooth(image)
    tiled = upscale_tiled(image, SCALE, 64, smooth)
    assert tiled.shape == whole.shape == (1, 3, 200, 300)
    # The model sees one pixel around each: only the pixels next to a tile's edge differ,
    # and inside an overlap the neighbouring tile holds them right.
    difference = (tiled - whole).abs()
    assert difference.max() < 0.05
    interior = torch.ones(200, 300, dtype=torch.bool)
    for edge in tile_edges(150):
        interior[:, edge * SCALE - 2 : edge * SCALE + 2] = False
    for edge in tile_edges(100):
        interior[edge * SCALE - 2 : edge * SCALE + 2, :] = False
    assert torch.allclose(tiled[0][:, interior], whole[0][:, interior], atol=1e-6)


def tile_edges(length: int, tile: int = 64) -> set[int]:
    """The input pixels where a tile begins or ends inside the image."""
    starts = tile_starts(length, tile, overlap_for(tile))
    return {start for start in starts if start > 0} | {
        start + tile for start in starts if start + tile < length
    }


def test_tiles_that_disagree_meet_without_a_step() -> None:
    # Each tile painted its own mean brightness (as a model with a global view might):
    # across the seam the output moves in small steps, not one jump.
    ramp_image = torch.linspace(0, 1, 256).repeat(1, 3, 64, 1)

    def mean_of_tile(pixels: torch.Tensor) -> torch.Tensor:
        upscaled = torch.nn.functional.interpolate(pixels, scale_factor=SCALE)
        return torch.full_like(upscaled, float(pixels.mean()))

    tiled = upscale_tiled(ramp_image, SCALE, 128, mean_of_tile)[0, 0, 0]
    tile_means = {float(ramp_image[..., 0:128].mean()), float(ramp_image[..., 128:].mean())}
    jump = max(tile_means) - min(tile_means)
    steps = torch.diff(tiled).abs()
    assert steps.max() < jump / 8
    assert float(tiled[0]) == min(tile_means)
    assert float(tiled[-1]) == max(tile_means)


def test_a_whole_image_is_one_tile_when_the_tile_size_is_zero_or_larger() -> None:
    image = noise_image(40, 48)
    calls: list[tuple[int, ...]] = []

    def counted(pixels: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(pixels.shape))
        return smooth(pixels)

    assert torch.equal(upscale_tiled(image, SCALE, 0, counted), smooth(image))
    assert torch.equal(upscale_tiled(image, SCALE, 64, counted), smooth(image))
    assert calls == [(1, 3, 40, 48), (1, 3, 40, 48)]


def test_the_outpaint_canvas_keeps_the_image_and_fills_the_padding_with_its_mean() -> None:
    image = Image.new("RGB", (64, 32), (200, 40, 40))
    image.paste((40, 40, 200), (0, 0, 32, 32))
    pad = OutpaintSpec(left=16, right=0, top=8, bottom=24)
    canvas = outpaint_canvas(image, pad)
    assert canvas.size == (80, 64)
    pixels = np.asarray(canvas)
    assert np.array_equal(pixels[8:40, 16:80], np.asarray(image))
    assert tuple(pixels[0, 0]) == (120, 40, 120)
    assert tuple(pixels[63, 79]) == (120, 40, 120)


def test_the_outpaint_mask_covers_the_padding_and_fades_into_the_image_by_the_feather() -> None:
    pad = OutpaintSpec(left=0, right=32, top=0, bottom=0, feather_pixels=8)
    mask = np.asarray(outpaint_mask((64, 64), pad), dtype=int)
    assert mask.shape == (64, 96)
    assert np.all(mask[:, 64:] == 255)  # the padding
    assert np.all(mask[:, :56] == 0)  # the original beyond the feather: kept exactly
    feather = mask[0, 56:64]
    assert np.all(np.diff(feather) > 0)
    assert feather[0] > 0
    assert feather[-1] < 255
    # No padding on the other sides: their edges stay black.
    assert np.all(mask[:, 0] == 0)
    assert np.all(mask[0, :56] == 0)


def test_an_outpaint_mask_without_feather_has_a_hard_edge() -> None:
    pad = OutpaintSpec(left=8, right=0, top=8, bottom=0, feather_pixels=0)
    mask = np.asarray(outpaint_mask((16, 16), pad), dtype=int)
    assert np.all(mask[:8, :] == 255)
    assert np.all(mask[:, :8] == 255)
    assert np.all(mask[8:, 8:] == 0)


def spec(**fields: object) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate({"model": "m", "prompt": "a red circle"} | fields)


INIT = {"initImage": "s3://uploads/init.png"}


def test_areas_drawn_anew_default_to_full_strength_and_a_given_strength_wins() -> None:
    removal = spec(prompt="", mode="inpaint", maskImage="s3://uploads/mask.png", **INIT)
    outpaint = spec(mode="outpaint", outpaint={"right": 64}, **INIT)
    assert denoising_strength(removal, 0.75) == 1.0
    assert denoising_strength(outpaint, 0.75) == 1.0
    assert denoising_strength(spec(mode="img2img", **INIT), 0.75) == 0.75
    assert denoising_strength(spec(mode="img2img", strength=0.3, **INIT), 0.75) == 0.3
    assert (
        denoising_strength(spec(mode="outpaint", outpaint={"top": 8}, strength=0.5, **INIT), 0.75)
        == 0.5
    )


def test_the_memory_estimate_takes_the_largest_image_denoised() -> None:
    assert denoised_size(spec(width=64, height=96)) == (64, 96)
    assert denoised_size(spec(width=64, height=96, hiresFix={"scale": 1.5})) == (96, 144)
    assert denoised_size(
        spec(mode="outpaint", width=64, height=64, outpaint={"left": 16, "bottom": 8}, **INIT)
    ) == (80, 72)
