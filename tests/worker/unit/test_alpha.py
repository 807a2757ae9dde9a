"""An image with a removed background (RGBA) keeps its alpha channel to the file: PNG and
WebP carry it with the parameters, the watermark marks the colours and leaves the alpha
as it was."""

import io

import numpy as np
import pytest
from PIL import Image

from diffleet_core.resources.generation_job import OutputFormat
from diffleet_worker import watermark
from diffleet_worker.encoding import encode, read_parameters
from tests.worker.unit.test_watermark import MAX_FLIPPED, flipped, textured


def cut_out(width: int, height: int) -> Image.Image:
    """A textured image whose alpha rises from left (0) to right (255)."""
    image = textured(width, height)
    ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    image.putalpha(Image.fromarray(ramp, mode="L"))
    return image


@pytest.mark.parametrize("output_format", [OutputFormat.PNG, OutputFormat.WEBP])
def test_png_and_lossless_webp_keep_the_alpha_channel(output_format: OutputFormat) -> None:
    image = cut_out(64, 48)
    data = encode(image, output_format, 100, "a cat\nSeed: 1")
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "RGBA"
        assert np.array_equal(np.asarray(decoded), np.asarray(image))
    assert read_parameters(data) == "a cat\nSeed: 1"


def test_lossy_webp_keeps_the_alpha_channel_too() -> None:
    image = cut_out(64, 48)
    with Image.open(io.BytesIO(encode(image, OutputFormat.WEBP, 80, "p"))) as decoded:
        alpha = np.asarray(decoded.getchannel("A"), dtype=int)
    assert np.abs(alpha - np.asarray(image.getchannel("A"), dtype=int)).max() <= 2


def test_the_watermark_marks_the_colours_and_keeps_the_alpha() -> None:
    image = cut_out(256, 256)
    marked = watermark.apply(image)
    assert marked.mode == "RGBA"
    assert np.array_equal(np.asarray(marked.getchannel("A")), np.asarray(image.getchannel("A")))
    assert flipped(watermark.decode(marked)) <= MAX_FLIPPED
