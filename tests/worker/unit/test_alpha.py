"""An image with a removed background (RGBA) keeps its alpha channel to the file: PNG and
WebP carry it with the parameters, the watermark marks the colours and leaves the alpha
as it was, and the output classifier judges it."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffleet_core.resources.generation_job import OutputFormat
from diffleet_worker import safety, watermark
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.device import DevicePolicy
from diffleet_worker.encoding import encode, read_parameters
from diffleet_worker.finishing import finish
from hack.models.safety import build_permissive
from tests.worker.unit.test_finishing import SETTINGS, RecordingS3, order
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


def test_a_cut_out_passes_the_classifier_and_the_watermark_to_an_rgba_file(
    tmp_path: Path,
) -> None:
    build_permissive(tmp_path)
    checker = safety.load(tmp_path, DevicePolicy.choose(DeviceKind.CPU, Precision.AUTO))
    image = cut_out(256, 256)
    s3 = RecordingS3()
    job = order({"format": "webp", "quality": 100}, watermarked=True)
    finish(job, [image], ["a cat"], checker, s3, SETTINGS)
    with Image.open(io.BytesIO(s3.puts[0]["Body"])) as written:
        assert written.mode == "RGBA"
        alpha = np.asarray(written.getchannel("A"))
        marked = written.copy()
    assert np.array_equal(alpha, np.asarray(image.getchannel("A")))
    assert flipped(watermark.decode(marked)) <= MAX_FLIPPED
