"""The ControlNet preprocessors: each weight-free one gives an RGB map of the input's size,
the same bytes for the same image, and what its ControlNet type was trained on; the
detectors (tiny DPT and Segformer from hack/models) give a gray depth map and an ADE20k-
coloured segmentation map; preprocess none and the missing preprocessors."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffleet_core.preprocessors import WEIGHT_FREE
from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec, Preprocess
from diffleet_worker import detectors
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.controls import image_digest, prepare
from diffleet_worker.device import DevicePolicy
from diffleet_worker.preprocessors import (
    PREPROCESSORS,
    PreprocessError,
    conditioning,
    module_name,
)
from hack.models.provision import local_model

# Not square, so that a swapped width and height shows.
SIZE = (48, 32)
LINE_TYPES = [ControlType.CANNY, ControlType.SCRIBBLE, ControlType.LINEART]


def square() -> Image.Image:
    """A black square on white: edges along its border, flat inside and outside."""
    image = Image.new("RGB", SIZE, "white")
    ImageDraw.Draw(image).rectangle((12, 8, 35, 23), fill="black")
    return image


def cpu() -> DevicePolicy:
    return DevicePolicy.choose(DeviceKind.CPU, Precision.FLOAT32)


def test_every_weight_free_type_of_the_contract_has_its_preprocessor() -> None:
    assert set(PREPROCESSORS) == WEIGHT_FREE


@pytest.mark.parametrize("control_type", list(PREPROCESSORS))
def test_weight_free_maps_are_rgb_of_the_input_size_and_repeat(control_type: ControlType) -> None:
    first = PREPROCESSORS[control_type](square())
    again = PREPROCESSORS[control_type](square())
    assert first.mode == "RGB"
    assert first.size == SIZE
    assert image_digest(first) == image_digest(again)


@pytest.mark.parametrize("control_type", LINE_TYPES)
def test_line_maps_are_white_lines_on_black_along_the_edges(control_type: ControlType) -> None:
    lines = np.asarray(PREPROCESSORS[control_type](square()))
    assert (lines[..., 0] == lines[..., 1]).all()
    assert (lines[..., 1] == lines[..., 2]).all()
    assert lines[6:11, 24].max() > 100  # across the square's top edge
    assert lines[1, 1].max() == 0  # flat white background


def test_tile_keeps_the_colours_and_loses_the_finest_detail() -> None:
    checker = np.indices((32, 48)).sum(axis=0) % 2 * 255
    image = Image.fromarray(np.stack([checker] * 3, axis=-1).astype(np.uint8))
    tiled = np.asarray(PREPROCESSORS[ControlType.TILE](image), dtype=float)
    assert abs(tiled.mean() - 127.5) < 5
    assert tiled.std() < np.asarray(image, dtype=float).std() / 4


def test_preprocess_none_passes_the_image_unchanged() -> None:
    image = square()
    made = conditioning("controlNets[0]", image, ControlType.DEPTH, Preprocess.NONE, {})
    assert made is image
    assert module_name(ControlType.DEPTH, Preprocess.NONE) == "none"


@pytest.mark.parametrize(
    ("control_type", "named"),
    [
        (ControlType.OPENPOSE, "no openpose preprocessor runs in diffleet"),
        (ControlType.DEPTH, "no depth detector is registered"),
    ],
)
def test_an_entry_without_a_preprocessor_is_refused_with_its_field(
    control_type: ControlType, named: str
) -> None:
    with pytest.raises(PreprocessError, match=r"controlNets\[1\]\.preprocess: " + named):
        conditioning("controlNets[1]", square(), control_type, Preprocess.AUTO, {})


def test_depth_detector_gives_a_gray_map_spanning_black_to_white() -> None:
    detector = detectors.load(local_model("tiny-depth-detector").path, ControlType.DEPTH, cpu())
    depth = np.asarray(
        conditioning(
            "c", square(), ControlType.DEPTH, Preprocess.AUTO, {ControlType.DEPTH: detector}
        )
    )
    assert depth.shape == (32, 48, 3)
    assert (depth[..., 0] == depth[..., 2]).all()
    assert (depth.min(), depth.max()) == (0, 255)


def test_segmentation_detector_colours_each_pixel_by_an_ade20k_class() -> None:
    path = local_model("tiny-segmentation-detector").path
    detector = detectors.load(path, ControlType.SEGMENTATION, cpu())
    segments = detectors.detect(detector, square())
    assert segments.size == SIZE
    colours = {tuple(colour) for colour in np.asarray(segments).reshape(-1, 3)}
    assert colours <= set(detectors.ADE20K_PALETTE)
    assert image_digest(segments) == image_digest(detectors.detect(detector, square()))


def test_each_entry_gets_its_own_conditioning_and_pipeline_arguments() -> None:
    spec = GenerationJobSpec.model_validate(
        {
            "model": "m",
            "prompt": "p",
            "controlNets": [
                {"model": "a", "image": "s3://uploads/a.png", "guidanceEnd": 0.5},
                {
                    "model": "b",
                    "image": "s3://uploads/b.png",
                    "preprocess": "none",
                    "conditioningScale": 0.7,
                },
            ],
        }
    )
    first, second = square(), Image.new("RGB", SIZE, "red")
    controls = prepare(spec, [ControlType.SCRIBBLE, ControlType.CANNY], [], [first, second], {})
    options = controls.options("control_image", (96, 64))
    assert image_digest(controls.entries[0].image) == image_digest(
        PREPROCESSORS[ControlType.SCRIBBLE](first)
    )
    assert controls.entries[1].image is second
    assert [image.size for image in options["control_image"]] == [(96, 64), (96, 64)]
    assert options["controlnet_conditioning_scale"] == [1.0, 0.7]
    assert options["control_guidance_start"] == [0.0, 0.0]
    assert options["control_guidance_end"] == [0.5, 1.0]
