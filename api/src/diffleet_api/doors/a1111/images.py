"""The Automatic1111 door's image steps, pure (Pillow): its base64 images (raw or data
URIs) decoded, and an inpaint request's mask and init image prepared as A1111 prepares
them before its sampler runs, so the job's maskImage and initImage are what A1111 would
have painted from:

- the mask: its alpha channel when it has transparency, else its luminance; thresholded
  at 128 (white = repaint, diffleet's convention too), inverted for
  `inpainting_mask_invert` 1, resized to the init image's size, then blurred by
  `mask_blur` (a Gaussian of that radius in pixels; the worker feathers it a little more).
- the init image's masked area, by `inpainting_fill`: 0 fill (the mean colour of the
  unmasked pixels), 1 original (unchanged), 2 latent noise (uniform noise, from the
  request's seed), 3 latent nothing (mid grey, roughly what an all-zero latent decodes
  to). A1111 does the last two in latent space; here they are done to the pixels.
"""

import base64
import binascii
import io
import random
import re
from enum import IntEnum

from PIL import Image, ImageFilter, ImageOps, ImageStat

from diffleet_api.errors import FieldError, InvalidError

DATA_URI = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,")
MASK_THRESHOLD = 128
LATENT_NOTHING_GREY = (128, 128, 128)


class InpaintingFill(IntEnum):
    FILL = 0
    ORIGINAL = 1
    LATENT_NOISE = 2
    LATENT_NOTHING = 3


def decoded(text: str, field: str) -> bytes:
    """The bytes of a base64 image as A1111 clients send it: raw, or a data URI."""
    body = "".join(DATA_URI.sub("", text.strip(), count=1).split())
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as error:
        message = f"not base64 (raw or a data:image/...;base64, URI): {error}"
        raise InvalidError(
            f"{field}: {message}",
            errors=[FieldError(field=field, rule="format", message=message)],
        ) from error
    return data


def binary_mask(mask: Image.Image, invert: bool) -> Image.Image:
    """White (255) where the mask asks to repaint, black elsewhere."""
    has_alpha = mask.mode in ("RGBA", "LA") or "transparency" in mask.info
    if has_alpha:
        alpha = mask.convert("RGBA").getchannel("A")
        grey = alpha if alpha.getextrema() != (255, 255) else mask.convert("L")
    else:
        grey = mask.convert("L")
    binary = grey.point(lambda value: 255 if value > MASK_THRESHOLD else 0)
    return ImageOps.invert(binary) if invert else binary


def filled(init: Image.Image, mask: Image.Image, fill: InpaintingFill, seed: int) -> Image.Image:
    """`init` (RGB) with its masked area (white in the binary `mask`) replaced by `fill`."""
    if fill is InpaintingFill.ORIGINAL:
        return init
    if fill is InpaintingFill.FILL:
        kept = ImageOps.invert(mask)
        colour = (
            tuple(int(channel + 0.5) for channel in ImageStat.Stat(init, kept).mean)
            if kept.getbbox() is not None
            else LATENT_NOTHING_GREY
        )
        patch = Image.new("RGB", init.size, colour)
    elif fill is InpaintingFill.LATENT_NOISE:
        noise = random.Random(seed).randbytes(init.width * init.height * 3)  # noqa: S311 - no secret
        patch = Image.frombytes("RGB", init.size, noise)
    else:
        patch = Image.new("RGB", init.size, LATENT_NOTHING_GREY)
    return Image.composite(patch, init, mask)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def inpaint_inputs(
    init_data: bytes,
    mask_data: bytes,
    *,
    blur: int,
    invert: bool,
    fill: InpaintingFill,
    seed: int,
) -> tuple[bytes, bytes]:
    """(init image, mask) as PNGs, prepared as the module's docstring says. Both inputs
    are images the API has sanitized already (uploads.cleaned)."""
    with Image.open(io.BytesIO(init_data)) as opened:
        init = opened.convert("RGB")
    with Image.open(io.BytesIO(mask_data)) as opened:
        opened.load()
        mask = binary_mask(opened, invert)
    if mask.size != init.size:
        mask = mask.resize(init.size, Image.Resampling.NEAREST)
    painted = filled(init, mask, fill, seed)
    blurred = mask.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else mask
    return png(painted), png(blurred)
