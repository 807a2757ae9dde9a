"""Training datasets for the trainer's tests: micro-shapes' world (64x64, one shape on
white) in a given colour, captioned with a word it never read, so a LoRA trained on them
is seen to teach it something (issue 20). YELLOW is a colour micro-shapes never draws (a
dataset that the readers' tests use); its VAE decodes only red, green and blue, so the
trainer's test teaches the new word blue instead.

`upload_dataset` stores them as a training dataset folder: `0000.png` with `0000.txt`...
"""

import io
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from hack.models.shapes import IMAGE_SIZE, Shape, random_shape, shape_mask
from hack.models.tokenizer import SHAPE_KINDS

# A yellow micro-shapes does not draw (its hue is 55 degrees, nearest to "yellow").
YELLOW = (230, 205, 25)
NEW_WORD = "zorp"
WHITE = (255, 255, 255)


def shapes_dataset(
    colour: tuple[int, int, int],
    word: str,
    count: int,
    seed: int,
    *,
    kinds: tuple[str, ...] = SHAPE_KINDS,
) -> list[tuple[Image.Image, str]]:
    """`count` pictures of a shape of `kinds` in `colour`, captioned "a <word> <kind>";
    the same arguments give the same pictures."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        # The word stands where micro-shapes' captions name the colour.
        shape = replace(random_shape(rng), colour=word, kind=str(rng.choice(kinds)))
        examples.append((drawn(shape, colour), shape.caption))
    return examples


def drawn(shape: Shape, colour: tuple[int, int, int]) -> Image.Image:
    pixels = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), WHITE, dtype=np.uint8)
    pixels[shape_mask(shape)] = colour
    return Image.fromarray(pixels, mode="RGB")


def upload_dataset(
    s3: Any, bucket: str, prefix: str, examples: list[tuple[Image.Image, str]]
) -> str:
    """Puts the examples under `prefix` as N.png and N.txt (numbered in order, zero-padded
    so the keys sort as the list does); the s3:// URI of the folder."""
    folder = prefix if prefix.endswith("/") else f"{prefix}/"
    for index, (image, caption) in enumerate(examples):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        s3.put_object(Bucket=bucket, Key=f"{folder}{index:04d}.png", Body=buffer.getvalue())
        s3.put_object(Bucket=bucket, Key=f"{folder}{index:04d}.txt", Body=caption.encode())
    return f"s3://{bucket}/{folder}"
