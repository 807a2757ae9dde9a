"""Test images: real PNG/JPEG/WebP files with EXIF, and hostile ones built byte by byte."""

import io
import struct
import zlib

from PIL import Image

EXIF_MARKER = "diffleet-secret-camera"
SCRIPT = b"<script>alert(document.cookie)</script>"


def exif() -> Image.Exif:
    tags = Image.Exif()
    tags[0x010F] = EXIF_MARKER  # Make
    tags[0x0112] = 1  # Orientation: upright
    return tags


def picture(image_format: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small RGB image in `image_format` with an EXIF block naming EXIF_MARKER."""
    image = Image.new("RGB", size, (200, 80, 20))
    out = io.BytesIO()
    image.save(out, format=image_format, exif=exif())
    return out.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height 8-bit gray pixels, whose few hundred
    bytes of zlib data would expand to width*height bytes (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compressobj(9)
    data = rows.compress(b"\0" * (width + 1) * 64) + rows.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def has_exif(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        return bool(image.getexif()) or "exif" in image.info


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) claims width x height: a few hundred
    bytes that a decoder would expand to width*height pixels."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(out, format="JPEG")
    data = bytearray(out.getvalue())
    frame = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)
