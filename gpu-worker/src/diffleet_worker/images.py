"""Input images of a job: fetched from S3, decoded safely, sized to the job, and the
built-in preprocessors (canny edges for ControlNet, feathered masks for inpainting)."""

import io
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter

from diffleet_core.storage import S3Location

MAX_INPUT_BYTES = 50 * 1024 * 1024
CANNY_LOW, CANNY_HIGH = 100, 200


class InputImageError(Exception):
    """An input image cannot be used; the message names the field and why."""


def fetch_image(s3: Any, uri: str, field: str, size: tuple[int, int], mode: str) -> Image.Image:
    """The image at `uri`, converted to `mode` and resized to `size` (width, height)."""
    location = S3Location.parse(uri)
    try:
        response = s3.get_object(Bucket=location.bucket, Key=location.key)
    except Exception as error:
        raise InputImageError(f"{field}: cannot read {uri}: {error}") from error
    if response.get("ContentLength", 0) > MAX_INPUT_BYTES:
        raise InputImageError(f"{field}: {uri} is larger than {MAX_INPUT_BYTES} bytes")
    data = response["Body"].read()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            decoded = image.convert(mode)
    except (OSError, Image.DecompressionBombError) as error:
        raise InputImageError(f"{field}: {uri} is not a readable image: {error}") from error
    if decoded.size != size:
        decoded = decoded.resize(size, Image.Resampling.LANCZOS)
    return decoded


def canny_edges(image: Image.Image) -> Image.Image:
    """The canny preprocessor of ControlNet-canny: white edges on black, 3 channels."""
    gray = np.asarray(image.convert("L"))
    edges = cv2.Canny(gray, CANNY_LOW, CANNY_HIGH)
    return Image.fromarray(np.stack([edges] * 3, axis=-1), mode="RGB")


def feathered(mask: Image.Image, radius: float) -> Image.Image:
    """The mask with soft edges, so repainted pixels blend into the kept ones."""
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def keep_unmasked(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Pixels outside the mask from the original, inside from the generated image; the
    (feathered) mask weighs the two along its edge."""
    return Image.composite(generated, original, mask)
