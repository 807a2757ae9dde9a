"""GenerationJobs through the whole platform (kubectl, operator, RabbitMQ, a real
diffusers worker on the CPU, S3) with the tiny test models of `make models`."""

import hashlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffleet_core.resources.generation_job import Sampler
from diffleet_worker.parameters import read_parameters
from tests.support.models import dominant_colour
from tests.support.platform import Process
from tests.support.stack import Kubectl
from tests.worker.conftest import decode, read_output, run_job, upload_image

SMALL = {"width": 64, "height": 64, "steps": 4}


def shapes_image() -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 30, 56), fill=(200, 40, 40))
    draw.ellipse((34, 12, 58, 36), fill=(40, 40, 200))
    return image


def test_txt2img_writes_a_png_of_the_requested_size_with_its_parameters(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    status = run_job(
        kubectl,
        studio_namespace,
        "txt2img",
        model="tiny-sd15",
        prompt="a red circle",
        negativePrompt="blurry",
        width=64,
        height=96,
        steps=4,
        seed=11,
        batchSize=2,
    )
    assert len(status["outputs"]) == 2
    for index, output in enumerate(status["outputs"]):
        png = read_output(output)
        assert hashlib.sha256(png).hexdigest() == output["sha256"]
        assert decode(png).size == (64, 96)
        parameters = read_parameters(png)
        assert parameters is not None
        prompt, negative, settings = parameters.split("\n")
        assert (prompt, negative) == ("a red circle", "Negative prompt: blurry")
        assert f"Steps: 4, Sampler: Euler a, CFG scale: 7, Seed: {11 + index}, " in settings
        assert (
            f"Size: 64x96, Model hash: {status['modelDigest'][:10]}, Model: tiny-sd15" in settings
        )
    assert status["outputs"][0]["sha256"] != status["outputs"][1]["sha256"]


def test_same_job_gives_the_same_bytes_and_another_seed_does_not(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    first = run_job(kubectl, studio_namespace, "same-1", model="tiny-sd15", seed=5, **SMALL)
    second = run_job(kubectl, studio_namespace, "same-2", model="tiny-sd15", seed=5, **SMALL)
    other = run_job(kubectl, studio_namespace, "other", model="tiny-sd15", seed=6, **SMALL)
    assert first["outputs"][0]["sha256"] == second["outputs"][0]["sha256"]
    assert first["outputs"][0]["sha256"] != other["outputs"][0]["sha256"]


def test_img2img_starts_from_the_init_image(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    init = upload_image(shapes_image(), "init")
    status = run_job(
        kubectl,
        studio_namespace,
        "img2img",
        model="tiny-sd15",
        mode="img2img",
        initImage=init,
        strength=0.5,
        seed=3,
        **SMALL,
    )
    png = read_output(status["outputs"][0])
    assert decode(png).size == (64, 64)
    assert "Denoising strength: 0.5" in (read_parameters(png) or "")


def test_inpaint_leaves_pixels_outside_the_mask_unchanged(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    original = shapes_image()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    status = run_job(
        kubectl,
        studio_namespace,
        "inpaint",
        model="tiny-sd15",
        mode="inpaint",
        initImage=upload_image(original, "init"),
        maskImage=upload_image(mask, "mask"),
        seed=4,
        **SMALL,
    )
    painted = np.asarray(decode(read_output(status["outputs"][0])).convert("RGB"), dtype=int)
    before = np.asarray(original, dtype=int)
    outside = np.ones((64, 64), dtype=bool)
    outside[4:60, 4:60] = False  # the mask grown by 3x the feather radius (4 px)
    assert np.abs(painted[outside] - before[outside]).max() <= 2
    inside = np.zeros((64, 64), dtype=bool)
    inside[20:44, 20:44] = True
    assert np.abs(painted[inside] - before[inside]).mean() > 5


def test_lora_at_weight_zero_is_no_lora_and_at_weight_one_changes_the_image(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    def pixels(name: str, **spec: Any) -> np.ndarray:
        status = run_job(
            kubectl, studio_namespace, name, model="tiny-sd15", seed=9, **SMALL, **spec
        )
        return np.asarray(decode(read_output(status["outputs"][0])))

    plain = pixels("lora-none")
    zero = pixels("lora-zero", loras=[{"model": "tiny-lora", "weight": 0.0}])
    one = pixels("lora-one", loras=[{"model": "tiny-lora", "weight": 1.0}])
    assert np.array_equal(plain, zero)
    assert not np.array_equal(plain, one)
    # The LoRA left the hot base model clean: the same job again matches the first.
    assert np.array_equal(plain, pixels("lora-after"))


def test_controlnet_guides_the_image_with_canny_edges(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    control = upload_image(shapes_image(), "control")
    guided = run_job(
        kubectl,
        studio_namespace,
        "controlnet",
        model="tiny-sd15",
        controlNet={"model": "tiny-canny", "image": control, "conditioningScale": 1.0},
        seed=2,
        **SMALL,
    )
    plain = run_job(kubectl, studio_namespace, "no-controlnet", model="tiny-sd15", seed=2, **SMALL)
    png = read_output(guided["outputs"][0])
    assert decode(png).size == (64, 64)
    assert "ControlNet: " in (read_parameters(png) or "")
    assert guided["outputs"][0]["sha256"] != plain["outputs"][0]["sha256"]


def test_sdxl_family_runs(kubectl: Kubectl, studio_namespace: str, studio: Process) -> None:
    status = run_job(kubectl, studio_namespace, "sdxl", model="tiny-sdxl", seed=1, **SMALL)
    assert decode(read_output(status["outputs"][0])).size == (64, 64)


@pytest.mark.parametrize("sampler", list(Sampler))
def test_every_sampler_runs(
    kubectl: Kubectl, studio_namespace: str, studio: Process, sampler: Sampler
) -> None:
    name = f"sampler-{sampler.value.replace('_', '-')}"
    status = run_job(
        kubectl, studio_namespace, name, model="tiny-sd15", sampler=sampler.value, seed=1, **SMALL
    )
    assert decode(read_output(status["outputs"][0])).size == (64, 64)


@pytest.mark.parametrize(
    ("colour", "shape"), [("red", "circle"), ("green", "square"), ("blue", "triangle")]
)
def test_micro_shapes_draws_the_colour_it_is_asked_for(
    kubectl: Kubectl, studio_namespace: str, studio: Process, colour: str, shape: str
) -> None:
    hits = 0
    for first_seed in (100, 105):
        status = run_job(
            kubectl,
            studio_namespace,
            f"{colour}-{shape}-{first_seed}",
            model="micro-shapes",
            prompt=f"a {colour} {shape}",
            width=64,
            height=64,
            steps=20,
            seed=first_seed,
            batchSize=5,
        )
        for output in status["outputs"]:
            hits += dominant_colour(decode(read_output(output))) == colour
    assert hits >= 9, f"{hits} of 10 seeds drew a {colour} {shape}"
