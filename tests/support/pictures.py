"""Pictures in tests: a PIL image as PNG bytes, and bytes back as a loaded image."""

import io

from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    """The image the bytes hold, loaded (the file is closed)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()
