"""Face restoration (restoreFaces): a spandrel restorer over the image, blended over the
original by restoreFaces.strength.

Face architectures (GFPGAN, RestoreFormer, and CodeFormer with the worker's
`restorers-noncommercial` extra: spandrel's purpose "FaceSR") take one aligned, square
face of 512 pixels. This worker has no face detector, so the whole image is resized to
that square (smaller when the image is: resizing up to restore and back down adds
nothing; never below the size, nor off the multiple, that the model needs), restored, and
resized back: right for portraits that are mostly face, softening elsewhere (the blend
strength bounds it). Other restorers (purpose "Restoration", scale 1) run on the image at
its size."""

from typing import Any

import torch
from PIL import Image
from spandrel import ImageModelDescriptor

from diffleet_worker.pipelines.upscale import to_image, to_tensor

FACE_SIZE = 512


def restore(image: Image.Image, model: Any, strength: float, seed: int) -> Image.Image:
    """`image` with the restored one blended over it; unchanged at strength 0. `seed`
    fixes the noise some face architectures inject (GFPGAN's StyleGAN decoder)."""
    if not isinstance(model, ImageModelDescriptor):
        raise ValueError(f"a restorer must map an image to an image, not a {type(model)}")
    if strength == 0:
        return image
    source = image
    if model.purpose == "FaceSR":
        needs = model.size_requirements
        side = max(min(FACE_SIZE, *image.size), needs.minimum)
        # Up to the architecture's multiple (CodeFormer's is 512): spandrel would pad the
        # input instead, leaving the face in one corner of it.
        side += needs.get_padding(side, side)[0]
        source = image.resize((side, side), Image.Resampling.LANCZOS)
    pixels = to_tensor(source).to(device=model.device, dtype=model.dtype)
    # The global generators, seeded for this call only (the CPU's put back after).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        restored = to_image(model(pixels).to(dtype=torch.float32))
    if restored.size != image.size:
        restored = restored.resize(image.size, Image.Resampling.LANCZOS)
    return Image.blend(image.convert("RGB"), restored, strength)
