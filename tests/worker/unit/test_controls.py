"""ControlNets through the worker's txt2img pipeline on the tiny models, in this process:
the guidance window bounds the steps a ControlNet acts in, and every entry of a
MultiControlNet steers the image."""

from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec
from diffleet_core.resources.model_cache import ModelType
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.controls import prepare
from diffleet_worker.device import DevicePolicy
from diffleet_worker.loading import Loader
from diffleet_worker.pipelines import txt2img
from diffleet_worker.pipelines.common import Generation
from tests.support.tiny_models import load_tiny

# 4 steps: a window starting at 0.9 covers none of them (step i runs at i/4).
SPEC = {"model": "m", "prompt": "a red circle", "width": 64, "height": 64, "steps": 4}
IMAGE = "s3://uploads/control.png"


@pytest.fixture(scope="module")
def loaded() -> dict[str, Any]:
    loader = Loader(DevicePolicy.choose(DeviceKind.CPU, Precision.FLOAT32))

    def load(name: str, kind: ModelType) -> Any:
        return load_tiny(loader, name, kind)

    return {
        "policy": loader.policy,
        "base": load("tiny-sd15", ModelType.CHECKPOINT),
        "canny": load("tiny-canny", ModelType.CONTROLNET),
        "scribble": load("tiny-scribble", ModelType.CONTROLNET),
    }


def control_image() -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill="black")
    return image


def draw(loaded: dict[str, Any], entries: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    spec = GenerationJobSpec.model_validate(SPEC | ({"controlNets": entries} if entries else {}))
    types = [ControlType(name) for name in names]
    nets = [loaded[name] for name in names]
    controls = prepare(spec, types, nets, [control_image()] * len(nets), {}) if entries else None
    generation = Generation(
        spec=spec,
        seeds=[1],
        policy=loaded["policy"],
        on_step=lambda *_: None,
        controls=controls,
    )
    return np.asarray(txt2img.run(loaded["base"], generation)[0], dtype=int)


def test_a_controlnet_acts_only_in_its_guidance_window(loaded: dict[str, Any]) -> None:
    plain = draw(loaded, [], [])
    outside = draw(loaded, [{"model": "c", "image": IMAGE, "guidanceStart": 0.9}], ["canny"])
    inside = draw(loaded, [{"model": "c", "image": IMAGE, "guidanceEnd": 0.5}], ["canny"])
    assert np.array_equal(plain, outside)
    assert not np.array_equal(plain, inside)


def test_every_controlnet_of_a_job_steers_the_image(loaded: dict[str, Any]) -> None:
    entry = {"model": "c", "image": IMAGE}
    canny = draw(loaded, [entry], ["canny"])
    both = draw(loaded, [entry, entry], ["canny", "scribble"])
    again = draw(loaded, [entry, entry], ["canny", "scribble"])
    assert not np.array_equal(canny, both)
    assert np.array_equal(both, again)
