"""T2I-Adapters through the worker's txt2img task on the tiny models, in this process:
the task runs diffusers' adapter pipeline made from the hot pipeline's modules; each
adapter receives its entry's conditioning (canny edges, or the sent map with preprocess
none) and steers the image by its scale; the same seed draws the same image; steps are
reported and a cancelled run stops; an sdxl checkpoint runs its adapters in
StableDiffusionXLAdapterPipeline."""

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    MultiAdapter,
    StableDiffusionAdapterPipeline,
    StableDiffusionXLAdapterPipeline,
    T2IAdapter,
)
from PIL import Image, ImageDraw

from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.controls import Controls, prepare
from diffleet_worker.device import DevicePolicy
from diffleet_worker.images import canny_edges
from diffleet_worker.loading import Loader
from diffleet_worker.pipelines import adapter, txt2img
from diffleet_worker.pipelines.common import Generation, StepReport
from diffleet_worker.runner import JobCancelledError
from hack.models.provision import local_model
from tests.support.tiny_models import load_tiny

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
        # Two entries may name the same adapter: the MultiAdapter holds it twice.
        "adapter": load("tiny-canny-adapter", ModelType.T2I_ADAPTER),
    }


def control_image() -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), fill="red")
    return image


def sent_map() -> Image.Image:
    return Image.linear_gradient("L").resize((64, 64)).convert("RGB")


def as_input(image: Image.Image) -> torch.Tensor:
    """An image as diffusers' adapter pipeline hands it to the adapter: (1, 3, H, W) in 0..1."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def controls_of(loaded: dict[str, Any], entries: list[dict[str, Any]]) -> Controls:
    spec = GenerationJobSpec.model_validate(SPEC | {"controlNets": entries})
    images = [
        sent_map() if entry.get("preprocess") == "none" else control_image() for entry in entries
    ]
    adapters = [loaded["adapter"]] * len(entries)
    return prepare(spec, [ControlType.CANNY] * len(entries), adapters, images, {})


def generation(
    loaded: dict[str, Any], entries: list[dict[str, Any]], on_step: StepReport | None = None
) -> Generation:
    spec = GenerationJobSpec.model_validate(SPEC | ({"controlNets": entries} if entries else {}))
    return Generation(
        spec=spec,
        seeds=[1],
        policy=loaded["policy"],
        on_step=on_step or (lambda *_: None),
        controls=controls_of(loaded, entries) if entries else None,
    )


def draw(loaded: dict[str, Any], entries: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray(txt2img.run(loaded["base"], generation(loaded, entries))[0], dtype=int)


def received(module: torch.nn.Module, run: Any) -> list[torch.Tensor]:
    """The inputs `module` is called with while `run()` runs."""
    inputs: list[torch.Tensor] = []
    hook = module.register_forward_pre_hook(lambda _, args: inputs.append(args[0].clone()))
    try:
        run()
    finally:
        hook.remove()
    return inputs


def test_the_adapter_pipeline_shares_the_hot_modules_and_takes_one_adapter_or_several(
    loaded: dict[str, Any],
) -> None:
    one = generation(loaded, [{"model": "a", "image": IMAGE, "conditioningScale": 0.7}])
    pipeline: Any = adapter.pipeline_for(loaded["base"], one)
    assert pipeline.unet is loaded["base"].unet
    assert pipeline.vae is loaded["base"].vae
    assert pipeline.adapter is loaded["adapter"]
    assert isinstance(pipeline, StableDiffusionAdapterPipeline)
    assert one.components == {}  # no ControlNet for AutoPipeline
    assert one.controls is not None
    options = one.controls.options("image")
    assert options["adapter_conditioning_scale"] == 0.7
    assert np.array_equal(np.asarray(options["image"]), np.asarray(canny_edges(control_image())))
    entries: list[dict[str, Any]] = [
        {"model": "a", "image": IMAGE, "conditioningScale": 0.5},
        {"model": "b", "image": IMAGE, "preprocess": "none"},
    ]
    two = controls_of(loaded, entries)
    assert isinstance(two.model, MultiAdapter)
    assert two.options("image")["adapter_conditioning_scale"] == [0.5, 1.0]


def test_each_adapter_receives_its_own_conditioning_and_steers_the_image(
    loaded: dict[str, Any],
) -> None:
    plain = draw(loaded, [])
    entry: dict[str, Any] = {"model": "a", "image": IMAGE}
    inputs = received(loaded["adapter"], lambda: draw(loaded, [entry]))
    assert len(inputs) == 1  # once per run: the features are added at every step
    assert torch.equal(inputs[0], as_input(canny_edges(control_image())))
    guided = draw(loaded, [entry])
    assert np.abs(guided - plain).mean() > 0.5
    assert np.array_equal(guided, draw(loaded, [entry]))
    # Scale 0 adds nothing (pipelines differ from the plain one by rounding only).
    assert np.abs(draw(loaded, [entry | {"conditioningScale": 0.0}]) - plain).max() <= 2
    # Two entries: the MultiAdapter gives each adapter its own image.
    both: list[dict[str, Any]] = [
        entry,
        {"model": "a", "image": IMAGE, "preprocess": "none", "conditioningScale": 0.5},
    ]
    inputs = received(loaded["adapter"], lambda: draw(loaded, both))
    assert [tensor.shape for tensor in inputs] == [(1, 3, 64, 64)] * 2
    assert torch.equal(inputs[0], as_input(canny_edges(control_image())))
    assert torch.equal(inputs[1], as_input(sent_map()))
    assert not np.array_equal(draw(loaded, both), guided)


def test_steps_are_reported_and_a_cancelled_run_stops(loaded: dict[str, Any]) -> None:
    entry = {"model": "a", "image": IMAGE}
    steps: list[tuple[int, int]] = []

    def cancel_at_two(pipeline: Any, step: int, total: int, latents: Any) -> None:
        steps.append((step, total))
        assert latents is not None
        if step == 2:
            pipeline._interrupt = True

    with pytest.raises(JobCancelledError):
        txt2img.run(loaded["base"], generation(loaded, [entry], cancel_at_two))
    assert steps == [(1, 4), (2, 4)]


def test_an_sdxl_checkpoint_runs_its_adapters_in_the_sdxl_adapter_pipeline() -> None:
    """tiny-sdxl's UNet has tiny-sd15's block layout, so an adapter of tiny-canny-adapter's
    config (random here: no sdxl adapter is in the catalog) fits it."""
    loader = Loader(DevicePolicy.choose(DeviceKind.CPU, Precision.FLOAT32))
    base = load_tiny(loader, "tiny-sdxl", ModelType.CHECKPOINT, BaseModelFamily.SDXL)
    config = T2IAdapter.load_config(local_model("tiny-canny-adapter").path)
    torch.manual_seed(0)
    xl_adapter = T2IAdapter.from_config(config)  # type: ignore[no-untyped-call]
    spec = GenerationJobSpec.model_validate(
        SPEC | {"controlNets": [{"model": "a", "image": IMAGE}]}
    )
    controls = prepare(spec, [ControlType.CANNY], [xl_adapter], [control_image()], {})
    guided = Generation(
        spec=spec, seeds=[1], policy=loader.policy, on_step=lambda *_: None, controls=controls
    )
    assert isinstance(adapter.pipeline_for(base, guided), StableDiffusionXLAdapterPipeline)
    plain = replace(guided, spec=GenerationJobSpec.model_validate(SPEC), controls=None)
    drawn = np.asarray(txt2img.run(base, guided)[0], dtype=int)
    assert np.array_equal(drawn, np.asarray(txt2img.run(base, guided)[0], dtype=int))
    assert np.abs(drawn - np.asarray(txt2img.run(base, plain)[0], dtype=int)).mean() > 0.5
