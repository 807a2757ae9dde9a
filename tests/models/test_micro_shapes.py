"""micro-shapes draws the colour it is asked for; the colour judge judges right."""

import numpy as np
import pytest
from PIL import Image

from hack.models.catalog import MICRO_SHAPES
from hack.models.colour_check import score
from hack.models.shapes import RGB, Shape, render
from tests.support.models import dominant_colour


@pytest.mark.parametrize("colour", list(RGB))
def test_dominant_colour_of_a_drawn_shape(colour: str) -> None:
    picture = render(Shape(colour=colour, kind="triangle", centre=(30.0, 34.0), radius=9.0))
    assert dominant_colour(Image.fromarray(picture)) == colour


def test_dominant_colour_ignores_white_grey_and_black() -> None:
    picture = np.full((64, 64, 3), 255, dtype=np.uint8)
    picture[:20] = 128
    picture[20:30] = 0
    assert dominant_colour(Image.fromarray(picture)) == "white"
    picture[40:50, 40:50] = RGB["blue"]  # 100 pixels: over 1% of the picture
    assert dominant_colour(Image.fromarray(picture)) == "blue"


def test_each_colour_is_drawn_for_every_seed_with_both_samplers() -> None:
    """Three seeds per colour here; `python -m hack.models score` runs ten."""
    scores = score(MICRO_SHAPES, seeds=3)
    assert {(s.sampler, s.colour) for s in scores} == {
        (sampler, colour) for sampler in ("euler_a", "shipped") for colour in RGB
    }
    for result in scores:
        assert result.hits == result.seeds, result.line()
