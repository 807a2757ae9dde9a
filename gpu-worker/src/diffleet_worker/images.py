"""Input images of a job: fetched from S3, decoded safely, sized to the job, and the
built-in preprocessors (canny edges for ControlNet, feathered masks for inpainting, the
canvas and mask of an outpaint)."""

import io
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageStat

from diffleet_core.resources.generation_job import OutpaintSpec
from diffleet_core.storage import S3Location

MAX_INPUT_BYTES = 50 * 1024 * 1024
CANNY_LOW, CANNY_HIGH = 100, 200


class InputImageError(Exception):
    """An input image cannot be used; the message names the field and why."""


def fetch_image(
    s3: Any, uri: str, field: str, size: tuple[int, int] | None, mode: str
) -> Image.Image:
    """The image at `uri`, converted to `mode` and resized to `size` (width, height; None:
    as it is)."""
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
    if size is not None and decoded.size != size:
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


def outpaint_canvas(image: Image.Image, pad: OutpaintSpec) -> Image.Image:
    """`image` on a canvas grown by `pad` on each side; the new area filled with the
    image's mean colour, a neutral start that the prompt then paints over (stretching the
    edge pixels instead would carry the shapes cut by the border into the new area)."""
    mean = tuple(int(channel + 0.5) for channel in ImageStat.Stat(image).mean)
    width, height = image.size
    canvas = Image.new(
        image.mode, (pad.left + width + pad.right, pad.top + height + pad.bottom), mean
    )
    canvas.paste(image, (pad.left, pad.top))
    return canvas


def outpaint_mask(size: tuple[int, int], pad: OutpaintSpec) -> Image.Image:
    """The outpaint mask of a canvas (white: to paint): the padding, reaching
    `feather_pixels` into the original image and fading out there, so the new area blends
    into the original, which stays exact beyond the feather. An image side without
    padding stays black to its edge."""
    canvas_width, canvas_height = size[0] + pad.left + pad.right, size[1] + pad.top + pad.bottom
    feather = pad.feather_pixels
    # The kept rectangle: the original, shrunk by the feather on its padded sides only.
    left = pad.left + (feather if pad.left else 0)
    top = pad.top + (feather if pad.top else 0)
    right = pad.left + size[0] - (feather if pad.right else 0)
    bottom = pad.top + size[1] - (feather if pad.bottom else 0)
    x = np.arange(canvas_width) + 0.5
    y = np.arange(canvas_height) + 0.5
    horizontal = _fade(np.maximum(left - x, x - right), feather)
    vertical = _fade(np.maximum(top - y, y - bottom), feather)
    weight = np.maximum(horizontal[np.newaxis, :], vertical[:, np.newaxis])
    return Image.fromarray(np.round(weight * 255).astype(np.uint8), mode="L")


def _fade(outside: np.ndarray, feather: int) -> np.ndarray:
    """Mask weights from how far pixel centres lie outside the kept span: 0 inside it,
    rising linearly to 1 over `feather` pixels; a hard edge when `feather` is 0."""
    if feather == 0:
        return (outside > 0).astype(float)
    return np.clip(outside / feather, 0, 1)
