"""OpenAI's mask convention in diffleet's: OpenAI edits the fully transparent pixels of
the mask (else of the image's own), diffleet repaints a mask's white pixels. And the
uploads an edit or a variation reads, bounded before they are decoded."""

import io

from fastapi import UploadFile
from PIL import Image
from pydantic import BaseModel

from diffleet_api.doors.openai.errors import refused
from diffleet_api.doors.openai.schemas import OpenAIEditRequest
from diffleet_api.images import ImageRefusedError, RefusalKind, sanitize


class EditImages(BaseModel):
    """An edit's image and its mask in diffleet's terms (PNG bytes, white = repaint;
    None: no transparency, an img2img edit), and the image's size."""

    image: bytes
    mask: bytes | None
    size: tuple[int, int]


def the_image(request: OpenAIEditRequest) -> UploadFile:
    """The one image of the edit (`image`, or `image[]` with one file); refused when
    there are none or several."""
    given = ([request.image] if request.image else []) + list(request.images or [])
    if not given:
        raise refused("image", "an edit needs an image", "required")
    if len(given) > 1:
        raise refused("image", f"an edit takes one image; {len(given)} were sent")
    return given[0]


async def read_upload(upload: UploadFile, param: str, limit: int) -> bytes:
    """The file's bytes, refused beyond `limit` without reading further."""
    if upload.size is not None and upload.size > limit:
        raise refused(param, f"{param} is {upload.size} bytes; at most {limit}", "maxBytes")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise refused(param, f"{param} is over {limit} bytes", "maxBytes")
    return data


def opened(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """The image decoded once cleaned as an upload is (`images.sanitize`); a refusal
    names `param`."""
    try:
        clean = sanitize(data, max_pixels)
    except ImageRefusedError as error:
        rule = "maxPixels" if error.kind == RefusalKind.TOO_LARGE else "image"
        raise refused(param, error.message, rule) from error
    with Image.open(io.BytesIO(clean.data)) as image:
        image.load()
        return image.copy()


def transparent_area(image: Image.Image) -> Image.Image | None:
    """The image's fully transparent pixels as a mask (white there, black elsewhere);
    None when it has no alpha."""
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" not in image.getbands():
        return None
    alpha = image.getchannel("A")
    return alpha.point(lambda value: 255 if value == 0 else 0)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_images(image_data: bytes, mask_data: bytes | None, max_pixels: int) -> EditImages:
    """OpenAI's convention in diffleet's: the mask's fully transparent pixels are edited
    (without a mask, the image's own); a mask must have the image's size and an alpha
    channel. An image with no transparent pixel and no mask is an img2img edit."""
    image = opened(image_data, "image", max_pixels)
    if mask_data is None:
        area = transparent_area(image)
        has_area = area is not None and area.getextrema()[1] == 255
        return EditImages(
            image=image_data, mask=png(area) if has_area and area else None, size=image.size
        )
    mask = opened(mask_data, "mask", max_pixels)
    if mask.size != image.size:
        raise refused(
            "mask",
            f"the mask is {mask.width}x{mask.height}; it must have the image's size"
            f" ({image.width}x{image.height})",
            "size",
        )
    area = transparent_area(mask)
    if area is None:
        raise refused("mask", "the mask must have an alpha channel (transparent = edited)", "alpha")
    return EditImages(image=image_data, mask=png(area), size=image.size)
