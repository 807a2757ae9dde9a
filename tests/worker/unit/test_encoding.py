"""Output files: PNG, JPEG and WebP carry the parameters where image tools read them (PNG
text chunk; EXIF UserComment as Automatic1111 writes it), identical input gives
identical bytes, and quality is the lossy formats' trade of size for fidelity."""

import io

import numpy as np
import piexif
import piexif.helper
import pytest
from PIL import Image

from diffleet_core.resources.generation_job import OutputFormat
from diffleet_worker.encoding import encode, read_parameters

# Emoji, CJK, Arabic (RTL), a combining acute accent, and Latin-1 on its own.
UNICODE_PROMPT = (
    "a red circle \U0001f534 \u7ea2\u8272\u7684\u5706 \u062f\u0627\u0626\u0631\u0629 e\u0301"
)
TEXT = f"{UNICODE_PROMPT}\nNegative prompt: blurry\nSteps: 4, Seed: 7, Size: 64x64"
PIL_NAMES = {OutputFormat.PNG: "PNG", OutputFormat.JPEG: "JPEG", OutputFormat.WEBP: "WEBP"}


def noisy(width: int = 64, height: int = 64) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


@pytest.mark.parametrize("output_format", list(OutputFormat))
def test_each_format_carries_the_parameters_and_gives_the_same_bytes_twice(
    output_format: OutputFormat,
) -> None:
    first = encode(noisy(), output_format, 90, TEXT)
    assert first == encode(noisy(), output_format, 90, TEXT)
    with Image.open(io.BytesIO(first)) as image:
        assert (image.format, image.size) == (PIL_NAMES[output_format], (64, 64))
    assert read_parameters(first) == TEXT


@pytest.mark.parametrize("output_format", [OutputFormat.JPEG, OutputFormat.WEBP])
def test_jpeg_and_webp_hold_the_text_as_a1111_writes_it(output_format: OutputFormat) -> None:
    """What A1111's reader does: piexif.load, then UserComment.load of tag 0x9286."""
    with Image.open(io.BytesIO(encode(noisy(), output_format, 90, TEXT))) as image:
        exif = piexif.load(image.info["exif"])
    comment = exif["Exif"][piexif.ExifIFD.UserComment]
    assert comment.startswith(b"UNICODE\x00")
    assert piexif.helper.UserComment.load(comment) == TEXT


@pytest.mark.parametrize(("prompt", "chunk"), [("caf\u00e9 cr\u00e8me", b"tEXt"), (TEXT, b"iTXt")])
def test_png_text_is_latin1_text_or_else_utf8_itxt(prompt: str, chunk: bytes) -> None:
    png = encode(Image.new("RGB", (8, 8)), OutputFormat.PNG, 90, prompt)
    assert chunk + b"parameters\x00" in png
    assert read_parameters(png) == prompt


def test_quality_trades_jpeg_size_for_fidelity() -> None:
    image = noisy()
    original = np.asarray(image, dtype=float)
    low, high = (encode(image, OutputFormat.JPEG, quality, "") for quality in (30, 95))
    assert len(low) < len(high)

    def error(data: bytes) -> float:
        return float(np.abs(np.asarray(decoded(data), dtype=float) - original).mean())

    assert error(high) < error(low)


def test_webp_at_quality_100_is_lossless() -> None:
    image = noisy()
    lossless = decoded(encode(image, OutputFormat.WEBP, 100, ""))
    lossy = decoded(encode(image, OutputFormat.WEBP, 99, ""))
    assert np.array_equal(np.asarray(lossless.convert("RGB")), np.asarray(image))
    assert not np.array_equal(np.asarray(lossy.convert("RGB")), np.asarray(image))


@pytest.mark.parametrize("pil_format", ["PNG", "JPEG", "WEBP"])
def test_a_file_without_parameters_reads_none(pil_format: str) -> None:
    buffer = io.BytesIO()
    noisy().save(buffer, format=pil_format)
    assert read_parameters(buffer.getvalue()) is None
