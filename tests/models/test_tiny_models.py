"""The tiny models load as the worker loads them and draw pictures of the asked size."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hack.models import controls, tiny
from hack.models.provision import LocalModel, local_model
from hack.models.registry import describe
from hack.models.untyped import (
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from tests.support.groups import DIFFUSERS

pytestmark = DIFFUSERS

STEPS = 4


def quiet(pipeline: Any) -> Any:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def draw(pipeline: Any, **options: object) -> np.ndarray:
    image = pipeline(
        "a red circle",
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **options,
    ).images[0]
    return np.asarray(image)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (128, 96)])
def test_sd15_folder_draws_the_asked_size(tiny_sd15: LocalModel, width: int, height: int) -> None:
    pipeline = quiet(StableDiffusionPipeline.from_pretrained(tiny_sd15.path))
    assert draw(pipeline, width=width, height=height).shape == (height, width, 3)


def test_sd15_img2img_draws_the_init_image_size(tiny_sd15: LocalModel) -> None:
    pipeline = quiet(StableDiffusionImg2ImgPipeline.from_pretrained(tiny_sd15.path))
    init = Image.new("RGB", (96, 64), "white")
    assert draw(pipeline, image=init, strength=0.75).shape == (64, 96, 3)


def test_sd15_single_file_is_the_same_model(tiny_sd15: LocalModel) -> None:
    single = local_model("tiny-sd15-single").path
    from_file = quiet(
        StableDiffusionPipeline.from_single_file(single, config=str(single.parent / "diffusers"))
    )
    from_folder = quiet(StableDiffusionPipeline.from_pretrained(tiny_sd15.path))
    for name in ("unet", "vae", "text_encoder"):
        loaded = getattr(from_file, name).state_dict()
        expected = getattr(from_folder, name).state_dict()
        assert loaded.keys() == expected.keys(), name
        for key, tensor in expected.items():
            assert torch.equal(loaded[key], tensor), f"{name}.{key}"
    assert np.array_equal(
        draw(from_file, width=64, height=64), draw(from_folder, width=64, height=64)
    )


def test_sdxl_folder_draws_the_asked_size() -> None:
    pipeline = quiet(StableDiffusionXLPipeline.from_pretrained(local_model("tiny-sdxl").path))
    image = pipeline(
        "a red circle",
        width=64,
        height=64,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3)


def with_lora(folder: Path, weight: float | None) -> np.ndarray:
    pipeline = quiet(StableDiffusionPipeline.from_pretrained(folder))
    if weight is not None:
        pipeline.load_lora_weights(str(local_model("tiny-lora").path), adapter_name="tiny")
        pipeline.set_adapters(["tiny"], adapter_weights=[weight])
    return draw(pipeline, width=64, height=64)


def test_lora_weight_zero_is_no_lora_and_weight_one_changes_the_picture(
    tiny_sd15: LocalModel,
) -> None:
    plain = with_lora(tiny_sd15.path, None)
    assert np.array_equal(with_lora(tiny_sd15.path, 0.0), plain)
    changed = np.abs(with_lora(tiny_sd15.path, 1.0) - plain).mean()
    assert changed > 0.02, f"LoRA at weight 1 changes pixels by {changed:.4f} on average"


def test_lora_is_one_safetensors_file() -> None:
    path = local_model("tiny-lora").path
    assert path.is_file()
    assert path.suffix == ".safetensors"


def test_controlnet_steers_the_picture(tiny_sd15: LocalModel) -> None:
    controlnet = ControlNetModel.from_pretrained(local_model("tiny-canny").path)
    pipeline = quiet(
        StableDiffusionControlNetPipeline.from_pretrained(tiny_sd15.path, controlnet=controlnet)
    )
    edges = np.zeros((64, 64, 3), dtype=np.uint8)
    edges[16:48, 16] = edges[16:48, 47] = edges[16, 16:48] = edges[47, 16:48] = 255
    control = Image.fromarray(edges)
    steered = draw(pipeline, image=control, controlnet_conditioning_scale=1.0)
    unsteered = draw(pipeline, image=control, controlnet_conditioning_scale=0.0)
    assert steered.shape == (64, 64, 3)
    assert np.abs(steered - unsteered).mean() > 0.02


@pytest.mark.parametrize(
    "build",
    [tiny.build_sd15, tiny.build_lora, controls.build_canny, controls.build_depth_detector],
)
def test_builds_are_the_same_bytes_every_time(
    tmp_path: Path, build: Callable[[Path], None]
) -> None:
    build(tmp_path / "first")
    build(tmp_path / "second")
    assert describe(tmp_path / "first").files == describe(tmp_path / "second").files
