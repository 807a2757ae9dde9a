"""Unit tests of the worker's pure pieces: sampler mapping, previews, input image
helpers, the memory budget and the order check."""

import base64
import io
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from diffleet_core.messages import DispatchedJob, JobRef, ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import SAMPLER_LABELS, GenerationJobSpec, Sampler
from diffleet_core.resources.model_cache import BaseModelFamily
from diffleet_worker.device import DeviceOutOfMemoryError, MemoryBudget, is_out_of_memory
from diffleet_worker.diffusers_runner import check_order
from diffleet_worker.images import canny_edges, feathered, keep_unmasked
from diffleet_worker.previews import preview_base64
from diffleet_worker.runner import RunFailedError
from diffleet_worker.samplers import SCHEDULERS, scheduler_for

SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}


def spec(**fields: object) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate({"model": "m", "prompt": "a red circle"} | fields)


@pytest.mark.parametrize("sampler", list(Sampler))
def test_every_sampler_has_a_scheduler_and_a_label(sampler: Sampler) -> None:
    scheduler = scheduler_for(sampler, SD15_SCHEDULER)
    assert isinstance(scheduler, SCHEDULERS[sampler][0])
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert SAMPLER_LABELS[sampler]


def test_karras_variant_uses_karras_sigmas() -> None:
    assert scheduler_for(Sampler.DPMPP_2M_KARRAS, SD15_SCHEDULER).config.use_karras_sigmas
    assert not scheduler_for(Sampler.DPMPP_2M, SD15_SCHEDULER).config.use_karras_sigmas


@pytest.mark.parametrize("family", list(BaseModelFamily))
def test_preview_is_a_png_at_latent_resolution(family: BaseModelFamily) -> None:
    latents = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    png = base64.b64decode(preview_base64(latents, family))
    with Image.open(io.BytesIO(png)) as preview:
        assert (preview.format, preview.size, preview.mode) == ("PNG", (12, 8), "RGB")


def test_canny_finds_the_edges_of_a_shape() -> None:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill="black")
    edges = np.asarray(canny_edges(image))
    assert edges.shape == (64, 64, 3)
    assert edges[14:19, 30].any()  # the top edge of the square
    assert not edges[32, 32].any()
    assert not edges[2, 2].any()


def test_keep_unmasked_takes_outside_pixels_from_the_original() -> None:
    original = Image.new("RGB", (32, 32), (0, 0, 255))
    generated = Image.new("RGB", (32, 32), (255, 0, 0))
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    result = np.asarray(keep_unmasked(original, generated, feathered(mask, 2)))
    assert tuple(result[0, 0]) == (0, 0, 255)
    assert tuple(result[16, 16]) == (255, 0, 0)
    assert 0 < result[8, 16][0] < 255  # the feathered edge blends the two


def test_memory_budget_refuses_what_does_not_fit_and_slicing_needs_less() -> None:
    full = MemoryBudget.estimate(64, 64, 1, low_memory=False)
    sliced = MemoryBudget.estimate(64, 64, 1, low_memory=True)
    assert sliced < full
    budget = MemoryBudget((full + sliced) // 2)
    with pytest.raises(DeviceOutOfMemoryError) as refused:
        budget.check(64, 64, 1, low_memory=False)
    assert is_out_of_memory(refused.value)
    budget.check(64, 64, 1, low_memory=True)
    MemoryBudget(0).check(2048, 2048, 8, low_memory=False)  # 0: unlimited


def model_ref(name: str, type_: str, family: str = "sd15") -> ModelRef:
    return ModelRef(
        namespace="ns",
        name=name,
        source=f"s3://models/{name}",
        format="diffusers",
        type=type_,
        base_model=family,
        digest="0" * 64,
    )


def order(**fields: object) -> DispatchedJob:
    values: dict[str, object] = {
        "job": JobRef(uid="u", namespace="ns", name="j", attempt=1),
        "spec": spec(),
        "seed": 1,
        "model": model_ref("m", "checkpoint"),
        "output_bucket": "out",
        "deadline": datetime.now(UTC),
    }
    return DispatchedJob.model_validate(values | fields)


def test_order_with_matching_models_passes() -> None:
    check_order(
        order(
            spec=spec(
                loras=[{"model": "l"}],
                controlNets=[{"model": "c", "image": "s3://uploads/c.png"}],
            ),
            loras=[model_ref("l", "lora")],
            control_nets=[
                model_ref("c", "controlnet").model_copy(update={"control_type": "canny"})
            ],
            control_types=["canny"],
        )
    )


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"model": model_ref("m", "lora")}, "not a checkpoint"),
        (
            {"spec": spec(loras=[{"model": "l"}]), "loras": [model_ref("l", "lora", "sdxl")]},
            "loras",
        ),
        (
            {
                "spec": spec(controlNets=[{"model": "c", "image": "s3://uploads/c.png"}]),
                "control_nets": [model_ref("c", "checkpoint")],
                "control_types": ["canny"],
            },
            "controlNets[0].model",
        ),
        (
            {"spec": spec(controlNets=[{"model": "c", "image": "s3://uploads/c.png"}])},
            "every ControlNet",
        ),
        ({"spec": spec(loras=[{"model": "l"}])}, "every LoRA"),
    ],
)
def test_order_with_mismatched_models_is_an_invalid_spec(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(RunFailedError) as failed:
        check_order(order(**fields))
    assert failed.value.reason == Reason.INVALID_SPEC
    assert named in str(failed.value)
