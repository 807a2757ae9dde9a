"""Uploaded images, checked and cleaned before they are stored (pure: bytes in, bytes out).

1. The format is sniffed from the first bytes (PNG, JPEG or WebP); the file's name and
   Content-Type are never trusted.
2. PNG and WebP must end where their own structure says (IEND, the RIFF size): bytes
   after the image are how polyglots (an image that is also a script or an archive) hide.
3. The dimensions are read from the header and checked against the pixel limit before a
   single pixel is decoded: a decompression bomb is refused, not expanded.
4. The image is decoded with the sniffed format's decoder only, one frame (animations are
   refused), turned upright by its EXIF orientation, and encoded again from its pixels:
   EXIF, XMP, text chunks and anything else riding along are gone from what is stored.
"""

import io
import struct
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, ImageOps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xae\x42\x60\x82"
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_QUALITY = 95
WEBP_QUALITY = 95


class ImageFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def pillow(self) -> str:
        return self.value.upper()

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"


class RefusalKind(StrEnum):
    UNSUPPORTED = "unsupported"
    """Not a PNG, JPEG or WebP image (415)."""
    INVALID = "invalid"
    """Claims to be one but is malformed, animated or carries trailing bytes (422)."""
    TOO_LARGE = "too-large"
    """More pixels than allowed (413)."""


class ImageRefusedError(Exception):
    def __init__(self, kind: RefusalKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class CleanImage:
    format: ImageFormat
    width: int
    height: int
    data: bytes


def sniff(data: bytes) -> ImageFormat:
    """The format the bytes are, by their magic numbers."""
    if data.startswith(PNG_MAGIC):
        return ImageFormat.PNG
    if data.startswith(JPEG_MAGIC):
        return ImageFormat.JPEG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    raise ImageRefusedError(RefusalKind.UNSUPPORTED, "the content is not a PNG, JPEG or WebP image")


def check_structure_end(data: bytes, image_format: ImageFormat) -> None:
    """Refuses PNG or WebP files with bytes after their last chunk."""
    if image_format == ImageFormat.PNG and not data.endswith(PNG_END):
        raise ImageRefusedError(
            RefusalKind.INVALID, "the PNG does not end with its IEND chunk (trailing bytes)"
        )
    if image_format == ImageFormat.WEBP:
        (riff_size,) = struct.unpack("<I", data[4:8])
        if riff_size + 8 != len(data):
            raise ImageRefusedError(
                RefusalKind.INVALID,
                f"the WebP's RIFF size says {riff_size + 8} bytes, the file has {len(data)}",
            )


def sanitize(data: bytes, max_pixels: int) -> CleanImage:
    """The image re-encoded without metadata; raises ImageRefusedError naming the rule."""
    image_format = sniff(data)
    check_structure_end(data, image_format)
    try:
        with Image.open(io.BytesIO(data), formats=[image_format.pillow]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRefusedError(
                    RefusalKind.TOO_LARGE,
                    f"{width}x{height} is {width * height} pixels; at most {max_pixels}",
                )
            if getattr(image, "n_frames", 1) > 1:
                raise ImageRefusedError(RefusalKind.INVALID, "animated images are not accepted")
            image.load()
            upright = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise ImageRefusedError(RefusalKind.TOO_LARGE, str(error)) from error
    except (OSError, SyntaxError, ValueError, struct.error) as error:
        raise ImageRefusedError(
            RefusalKind.INVALID, f"the {image_format.value} image cannot be decoded: {error}"
        ) from error
    encoded = encode(upright, image_format)
    return CleanImage(image_format, upright.width, upright.height, encoded)


def encode(image: Image.Image, image_format: ImageFormat) -> bytes:
    """The pixels alone, in the same format (no EXIF, XMP, ICC or text)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image_format == ImageFormat.JPEG and image.mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    if image_format == ImageFormat.PNG and image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    if image_format == ImageFormat.WEBP and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.info.clear()
    out = io.BytesIO()
    if image_format == ImageFormat.PNG:
        image.save(out, format="PNG")
    elif image_format == ImageFormat.JPEG:
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(out, format="WEBP", quality=WEBP_QUALITY)
    return out.getvalue()
