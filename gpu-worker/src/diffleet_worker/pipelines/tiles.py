"""Tiled super-resolution: an image cut into overlapping tiles, each upscaled alone (a
tile's memory, not the image's), and put together again with the overlaps blended by a
linear ramp, so the seams show no step where neighbouring tiles disagree."""

import math
from collections.abc import Callable

import torch

# An upscaler on one tile: (1, C, h, w) in [0, 1] -> (1, C, h * scale, w * scale), on the CPU.
TileUpscaler = Callable[[torch.Tensor], torch.Tensor]

# Tiles and overlaps in multiples of this: the SD x4 upscaler's UNet halves its input 3 times.
TILE_MULTIPLE = 8


def overlap_for(tile: int) -> int:
    """Input pixels two neighbouring tiles share: an eighth of the tile, at least 8."""
    return max(TILE_MULTIPLE, tile // 8 // TILE_MULTIPLE * TILE_MULTIPLE)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side begin: as few tiles as overlap by at least
    `overlap`, spread evenly from one end to the other (so every tile is whole and the
    overlaps are alike)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def ramp(length: int, rise_before: int, rise_after: int) -> torch.Tensor:
    """Weights along one side of a tile: rising linearly over `rise_before` pixels where
    it overlaps the tile before, falling over `rise_after` where it overlaps the next one,
    1 between. Never 0, so every pixel has weight."""
    weights = torch.ones(length)
    if rise_before:
        weights[:rise_before] = (torch.arange(rise_before) + 0.5) / rise_before
    if rise_after:
        weights[length - rise_after :] = torch.flip(
            (torch.arange(rise_after) + 0.5) / rise_after, dims=(0,)
        )
    return weights


def upscale_tiled(
    image: torch.Tensor, scale: int, tile: int, upscale: TileUpscaler
) -> torch.Tensor:
    """`image` (1, C, H, W) upscaled by `scale`, in tiles of `tile` input pixels a side
    (0: the whole image at once); overlaps blended, so a model that sees only a pixel's
    neighbourhood gives the untiled result away from the seams."""
    _, channels, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return upscale(image)
    tile = max(TILE_MULTIPLE, tile // TILE_MULTIPLE * TILE_MULTIPLE)
    overlap = overlap_for(tile)
    rise = overlap * scale
    rows, columns = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out = torch.zeros(channels, height * scale, width * scale)
    total = torch.zeros(height * scale, width * scale)
    for row, top in enumerate(rows):
        for column, left in enumerate(columns):
            piece = image[:, :, top : top + tile, left : left + tile]
            upscaled = upscale(piece)[0].to(device="cpu", dtype=torch.float32)
            tile_height, tile_width = upscaled.shape[-2:]
            weight = torch.outer(
                ramp(tile_height, rise if row > 0 else 0, rise if row < len(rows) - 1 else 0),
                ramp(
                    tile_width, rise if column > 0 else 0, rise if column < len(columns) - 1 else 0
                ),
            )
            y, x = top * scale, left * scale
            out[:, y : y + tile_height, x : x + tile_width] += upscaled * weight
            total[y : y + tile_height, x : x + tile_width] += weight
    return (out / total).unsqueeze(0)
