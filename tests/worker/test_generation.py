"""GenerationJobs through the whole platform (kubectl, operator, RabbitMQ, a real
diffusers worker on the CPU, S3) with the tiny test models of `make models`."""

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pika
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import save_file

from diffleet_core.queues import Topology
from diffleet_core.resources.generation_job import PROGRESS_ANNOTATION, PROGRESS_IN_STATUS, Sampler
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_core.storage import S3Location
from diffleet_worker.encoding import read_parameters
from hack.models.registry import register
from tests.support.groups import DIFFUSERS
from tests.support.models import RegisteredModel, dominant_colour
from tests.support.platform import (
    Process,
    apply_job,
    job_status,
    register_model,
    wait_for_phase,
)
from tests.support.polling import eventually
from tests.support.stack import Kubectl
from tests.worker.conftest import (
    JOB_TIMEOUT,
    Studio,
    circle,
    decode,
    read_output,
    run_job,
    run_jobs,
    upload_image,
)

pytestmark = DIFFUSERS

SMALL = {"width": 64, "height": 64, "steps": 4}
# micro-shapes' colours (hack/models/shapes.py) and the size it was trained at.
RED, BLUE = (220, 30, 30), (30, 30, 220)
SHAPES = {"width": 64, "height": 64, "steps": 20}


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


def test_img2img_keeps_the_colour_of_the_init_image_at_low_strength(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    # The prompt asks for green: at strength 0.3 the init image must win.
    drawn = {}
    for name, colour in (("red", RED), ("blue", BLUE)):
        status = run_job(
            kubectl,
            studio_namespace,
            f"img2img-{name}",
            model="micro-shapes",
            prompt="a green square",
            mode="img2img",
            initImage=upload_image(circle(colour), name),
            strength=0.3,
            seed=3,
            **SHAPES,
        )
        png = read_output(status["outputs"][0])
        assert "Denoising strength: 0.3" in (read_parameters(png) or "")
        drawn[name] = dominant_colour(decode(png))
    assert drawn == {"red": "red", "blue": "blue"}


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


def second_lora(models: dict[str, RegisteredModel], out: Path) -> Path:
    """tiny-lora with other (seeded) B matrices: a second LoRA for the same UNet."""
    source = models["tiny-lora"].path
    generator = torch.Generator().manual_seed(2)
    with safe_open(source, framework="pt") as weights:
        metadata = weights.metadata()
        tensors = {key: weights.get_tensor(key) for key in sorted(weights.keys())}
    for key, tensor in tensors.items():
        if "lora_B" in key:
            tensors[key] = torch.randn(tensor.shape, generator=generator) * tensor.std()
    path = out / "tiny-lora-b.safetensors"
    save_file(tensors, path, metadata=metadata)
    return path


def test_two_stacked_loras_are_both_applied(
    kubectl: Kubectl,
    studio_namespace: str,
    studio: Process,
    models: dict[str, RegisteredModel],
    tmp_path: Path,
) -> None:
    other = register(
        "tiny-lora-b",
        second_lora(models, tmp_path),
        namespace=studio_namespace,
        prefix=f"tests/{studio_namespace}/tiny-lora-b",
        model_format=ModelFormat.SAFETENSORS,
        type=ModelType.LORA,
        baseModel=BaseModelFamily.SD15,
        vramGiB=0.5,
    )
    first = {"model": "tiny-lora", "weight": 1.0}
    second = {"model": "tiny-lora-b", "weight": 1.0}
    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            name: {"model": "tiny-sd15", "seed": 9, "loras": loras, **SMALL}
            for name, loras in (
                ("stack-none", []),
                ("stack-first", [first]),
                ("stack-second", [second]),
                ("stack-both", [first, second]),
            )
        },
    )
    drawn = {name: pixels_of(status) for name, status in done.items()}
    for alone in ("stack-none", "stack-first", "stack-second"):
        assert not np.array_equal(drawn["stack-both"], drawn[alone]), alone
    assert done["stack-both"]["loraDigests"] == {
        "tiny-lora": models["tiny-lora"].digest,
        "tiny-lora-b": other.digest,
    }
    parameters = read_parameters(read_output(done["stack-both"]["outputs"][0])) or ""
    assert (
        f'Lora hashes: "tiny-lora: {models["tiny-lora"].digest[:10]}, '
        f'tiny-lora-b: {other.digest[:10]}"' in parameters
    )


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
    assert 'ControlNet 0: "Module: canny, Model: tiny-canny, Weight: 1' in (
        read_parameters(png) or ""
    )
    assert guided["outputs"][0]["sha256"] != plain["outputs"][0]["sha256"]


def pixels_of(status: dict[str, Any]) -> np.ndarray:
    return np.asarray(decode(read_output(status["outputs"][0])).convert("RGB"))


def test_sdxl_is_deterministic_and_the_seed_changes_the_image(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            name: {"model": "tiny-sdxl", "seed": seed, **SMALL}
            for name, seed in (("sdxl-1", 1), ("sdxl-1-again", 1), ("sdxl-2", 2))
        },
    )
    first, again = done["sdxl-1"]["outputs"][0], done["sdxl-1-again"]["outputs"][0]
    assert decode(read_output(first)).size == (64, 64)
    assert first["sha256"] == again["sha256"]
    assert not np.array_equal(pixels_of(done["sdxl-1"]), pixels_of(done["sdxl-2"]))


# Samplers that add fresh noise at every step, drawn from the job's seeded generator:
# where a seed could stop fixing the image. The others only denoise the seeded latents,
# which every repeat (and test_same_job_gives_the_same_bytes_and_another_seed_does_not)
# checks.
NOISY_SAMPLERS = (Sampler.EULER_A, Sampler.LCM)


def test_every_sampler_draws_its_own_image_and_the_noisy_ones_repeat_it(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    def name(sampler: Sampler, run: str) -> str:
        return f"sampler-{sampler.value.replace('_', '-')}-{run}"

    def spec(sampler: Sampler) -> dict[str, Any]:
        return {"model": "tiny-sd15", "sampler": sampler.value, "seed": 1, **SMALL}

    jobs = {name(sampler, "a"): spec(sampler) for sampler in Sampler}
    jobs |= {name(sampler, "b"): spec(sampler) for sampler in NOISY_SAMPLERS}
    done = run_jobs(kubectl, studio_namespace, jobs)
    for sampler in NOISY_SAMPLERS:
        first, again = done[name(sampler, "a")], done[name(sampler, "b")]
        assert first["outputs"][0]["sha256"] == again["outputs"][0]["sha256"], sampler
    drawn = {sampler: pixels_of(done[name(sampler, "a")]) for sampler in Sampler}
    for sampler, pixels in drawn.items():
        assert pixels.shape == (64, 64, 3), sampler
    alike = [
        (one.value, other.value)
        for index, one in enumerate(Sampler)
        for other in list(Sampler)[index + 1 :]
        if np.array_equal(drawn[one], drawn[other])
    ]
    assert not alike, f"samplers that drew the same pixels: {alike}"


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


# Emoji, CJK, Arabic (right to left) and a combining acute accent.
UNICODE_PROMPT = (
    "a red circle \U0001f534 \u7ea2\u8272\u7684\u5706 \u062f\u0627\u0626\u0631\u0629 e\u0301"
)
UNICODE_NEGATIVE = (
    "\u307c\u3084\u3051\u305f \U0001f32b\ufe0f \u05de\u05d8\u05d5\u05e9\u05d8\u05e9 n\u0303"
)


def test_a_prompt_in_any_script_round_trips_through_s3_and_the_png(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    status = run_job(
        kubectl,
        studio_namespace,
        "unicode",
        model="tiny-sd15",
        prompt=UNICODE_PROMPT,
        negativePrompt=UNICODE_NEGATIVE,
        seed=1,
        **SMALL,
    )
    png = read_output(status["outputs"][0])
    assert b"iTXtparameters" in png
    prompt, negative, _ = (read_parameters(png) or "").split("\n")
    assert (prompt, negative) == (UNICODE_PROMPT, f"Negative prompt: {UNICODE_NEGATIVE}")
    location = S3Location.parse(status["outputs"][0]["uri"])
    head = boto3.client("s3").head_object(Bucket=location.bucket, Key=location.key)
    job = kubectl.json("get", "generationjob", "unicode", "-n", studio_namespace)
    metadata = head["Metadata"]
    assert {key: metadata[key] for key in ("namespace", "job", "uid", "attempt", "worker")} == {
        "namespace": studio_namespace,
        "job": "unicode",
        "uid": job["metadata"]["uid"],
        "attempt": "1",
        "worker": "cpu",
    }


def quarantined(worker: Process, reason: str) -> float:
    return worker.metric("diffleet_worker_jobs_quarantined_total", reason=reason) or 0.0


def publish_to_worker(prefix: str, worker: str, bodies: list[bytes]) -> None:
    """Puts raw messages straight into a worker's queue, as a broken dispatcher might."""
    queue = Topology(prefix=prefix).worker_queue(worker)
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["DIFFLEET_AMQP_URL"]))
    try:
        channel = connection.channel()
        for body in bodies:
            channel.basic_publish(exchange="", routing_key=queue, body=body)
    finally:
        connection.close()


def test_an_unreadable_job_order_fails_its_job_and_the_next_job_runs(
    kubectl: Kubectl, studio_namespace: str, shared_studio: Studio
) -> None:
    studio = shared_studio.worker
    # A job the operator cannot dispatch (no such model): only the bad order reaches it.
    apply_job(kubectl, studio_namespace, "unreadable", model="nowhere", **SMALL)
    wait_for_phase(kubectl, studio_namespace, "unreadable", "Pending")
    uid = kubectl.json("get", "generationjob", "unreadable", "-n", studio_namespace)["metadata"][
        "uid"
    ]
    ref = {"uid": uid, "namespace": studio_namespace, "name": "unreadable", "attempt": 1}
    before = quarantined(studio, "unreadable")
    publish_to_worker(
        shared_studio.fleet,
        "cpu",
        [b"\xff not an order", json.dumps({"job": ref, "spec": {"prompt": 7}}).encode()],
    )
    failed = wait_for_phase(kubectl, studio_namespace, "unreadable", "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "could not read its order" in failed["message"]
    eventually(
        lambda: quarantined(studio, "unreadable") == before + 2,
        timeout=30,
        what="both unreadable orders counted",
    )
    run_job(kubectl, studio_namespace, "after-unreadable", model="tiny-sd15", seed=1, **SMALL)


def test_a_job_whose_model_fails_to_load_fails_with_the_error_and_the_next_job_runs(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    register_model(kubectl, studio_namespace, "hollow")  # a safetensors file of no tensors
    before = quarantined(studio, "unexpected")
    apply_job(kubectl, studio_namespace, "hollow", model="hollow", **SMALL)
    failed = wait_for_phase(kubectl, studio_namespace, "hollow", "Failed", timeout=JOB_TIMEOUT)
    assert failed["reason"] == "Failed"
    assert "Error" in failed["message"]
    assert quarantined(studio, "unexpected") == before + 1
    run_job(kubectl, studio_namespace, "after-hollow", model="tiny-sd15", seed=1, **SMALL)


def test_cancel_stops_the_denoising_within_one_step(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    namespace, worker = studio_namespace, studio
    apply_job(kubectl, namespace, "long", model="tiny-sd15", width=64, height=64, steps=150)
    # Its progress in its status, to cancel it once it is under way.
    kubectl.run(
        "annotate", "generationjob", "long", "-n", namespace,
        f"{PROGRESS_ANNOTATION}={PROGRESS_IN_STATUS}",
    )  # fmt: skip
    eventually(
        lambda: (job_status(kubectl, namespace, "long").get("progress") or {}).get("step", 0) >= 2,
        timeout=JOB_TIMEOUT,
        what="job long past step 2",
    )
    kubectl.run(
        "patch", "generationjob", "long", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"cancel":true}}',
    )  # fmt: skip
    wait_for_phase(kubectl, namespace, "long", "Cancelled")
    uid = kubectl.json("get", "generationjob", "long", "-n", namespace)["metadata"]["uid"]
    received = re.compile(rf"job {uid}: cancel received at step (\d+)")
    stopped = re.compile(rf"job {uid}: cancelled, last step (\d+)")

    def steps() -> tuple[int, int] | None:
        log = worker.log.read_text()
        at, last = received.search(log), stopped.search(log)
        return (int(at.group(1)), int(last.group(1))) if at and last else None

    at, last = eventually(steps, timeout=30, what="worker logs the cancel")
    # The worker's event loop learns of a step just after the pipeline's thread ends it,
    # so the step it logs at the cancel may be one behind the step under way then.
    assert last - at <= 2, f"cancel received at step {at}, the worker went on to step {last}"
    assert last < 150
