"""The invisible watermark: a marked image decodes back to the 48 bits SDXL embeds (a few
may flip in the 8-bit rounding), an unmarked one agrees with them by chance only, and a
lossless file keeps the mark."""

import io

import numpy as np
import pytest
from PIL import Image

from diffleet_core.policy import WATERMARK_BITS
from diffleet_core.resources.generation_job import OutputFormat
from diffleet_worker import watermark
from diffleet_worker.encoding import encode

# Bits a marked image may get wrong (seen: 0 to 3 at 256x256, 0 at 512x512); an unmarked
# one gets about half of the 48 wrong, and 4 or fewer by chance once in 10^8 images.
MAX_FLIPPED = 4
UNMARKED_AT_LEAST = 12


def flipped(bits: list[int]) -> int:
    """How many bits differ from the watermark's."""
    return sum(bit != expected for bit, expected in zip(bits, WATERMARK_BITS, strict=True))


def textured(width: int, height: int, seed: int = 3) -> Image.Image:
    """Random colours, smoothed: the texture of a generated image."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("size", [(256, 256), (384, 256)])
def test_a_marked_image_decodes_to_the_watermark_and_an_unmarked_one_does_not(
    size: tuple[int, int],
) -> None:
    image = textured(*size)
    marked = watermark.apply(image)
    assert marked.size == image.size
    assert flipped(watermark.decode(marked)) <= MAX_FLIPPED
    assert flipped(watermark.decode(image)) >= UNMARKED_AT_LEAST


@pytest.mark.parametrize(
    ("output_format", "quality"), [(OutputFormat.PNG, 90), (OutputFormat.WEBP, 100)]
)
def test_the_mark_survives_a_lossless_file(output_format: OutputFormat, quality: int) -> None:
    data = encode(watermark.apply(textured(256, 256)), output_format, quality, "")
    with Image.open(io.BytesIO(data)) as read:
        assert flipped(watermark.decode(read)) <= MAX_FLIPPED


def test_an_image_under_256_pixels_a_side_is_left_unmarked() -> None:
    image = textured(512, 128)
    assert watermark.apply(image) is image
    with pytest.raises(ValueError, match="512x128 carries no watermark"):
        watermark.decode(image)
