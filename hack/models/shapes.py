"""The micro-shapes world: captioned 64x64 pictures of one coloured shape on white, and
the judge of a generated picture's colour."""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from hack.models.tokenizer import SHAPE_COLOURS, SHAPE_KINDS

IMAGE_SIZE = 64
RGB = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 30, 220)}
# Hue sectors (degrees, centre) of the colours a picture can be judged to be.
HUES = {"red": 0, "yellow": 60, "green": 120, "cyan": 180, "blue": 240, "magenta": 300}
WHITE = "white"


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    centre: tuple[float, float]
    radius: float

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.kind}"


def random_shape(rng: np.random.Generator) -> Shape:
    radius = float(rng.uniform(8, 22))
    low, high = radius + 1, IMAGE_SIZE - radius - 1
    return Shape(
        colour=str(rng.choice(SHAPE_COLOURS)),
        kind=str(rng.choice(SHAPE_KINDS)),
        centre=(float(rng.uniform(low, high)), float(rng.uniform(low, high))),
        radius=radius,
    )


def shape_mask(shape: Shape) -> np.ndarray:
    """Boolean (height, width) mask of the shape's pixels."""
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
    dx, dy = xs - shape.centre[0], ys - shape.centre[1]
    if shape.kind == "circle":
        return np.asarray(dx**2 + dy**2 <= shape.radius**2)
    if shape.kind == "square":
        half = shape.radius * 0.85
        return np.asarray((np.abs(dx) <= half) & (np.abs(dy) <= half))
    # An upward triangle inscribed in the circle: below the two slanted edges, above the base.
    base = shape.radius * 0.5
    slope = np.sqrt(3.0)
    return np.asarray((dy <= base) & (dy >= -shape.radius + slope * np.abs(dx)))


def render(shape: Shape) -> np.ndarray:
    """The picture as uint8 (height, width, 3)."""
    image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255, dtype=np.uint8)
    image[shape_mask(shape)] = RGB[shape.colour]
    return image


def dominant_colour(image: Image.Image, *, min_fraction: float = 0.01) -> str:
    """The hue name (red, yellow, green, cyan, blue or magenta) of most of the picture's
    coloured pixels; "white" when fewer than `min_fraction` of its pixels are coloured.

    A pixel is coloured when it is saturated (max - min channel >= 60 of 255), so white,
    grey and black pixels never count; its hue goes to the nearest named hue.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    high, low = pixels.max(axis=1), pixels.min(axis=1)
    coloured = pixels[(high - low) >= 60]
    if len(coloured) < min_fraction * len(pixels):
        return WHITE
    hues = hue_degrees(coloured)
    names = list(HUES)
    centres = np.array([HUES[name] for name in names], dtype=np.float32)
    distance = np.abs((hues[:, None] - centres[None, :] + 180) % 360 - 180)
    votes = np.bincount(distance.argmin(axis=1), minlength=len(names))
    return names[int(votes.argmax())]


def hue_degrees(pixels: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of saturated RGB pixels (n, 3)."""
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    hue = np.degrees(np.arctan2(np.sqrt(3.0) * (green - blue), 2 * red - green - blue))
    return np.asarray(hue % 360)
