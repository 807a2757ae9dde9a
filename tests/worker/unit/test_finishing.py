"""The end of a run (finishing.py) with an S3 client that records its puts: the output
classifier's verdicts (the two tiny checkers of hack/models: one flags nothing, one
everything), a flagged image failing the job before any upload, and the files written
in the spec's format, watermarked when the order asks."""

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffleet_core.messages import DispatchedJob, JobRef, ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import GenerationJobSpec, OutputFormat
from diffleet_worker import safety, watermark
from diffleet_worker.config import DeviceKind, Precision, WorkerSettings
from diffleet_worker.device import DevicePolicy
from diffleet_worker.encoding import read_parameters
from diffleet_worker.finishing import finish
from diffleet_worker.runner import RunFailedError
from hack.models.safety import build_permissive, build_strict
from tests.worker.unit.test_watermark import MAX_FLIPPED, flipped, textured


class RecordingS3:
    def __init__(self) -> None:
        self.puts: list[dict[str, Any]] = []

    def put_object(self, **request: Any) -> None:
        self.puts.append(request)


@pytest.fixture(scope="module")
def checkers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, safety.SafetyChecker]:
    """tiny-safety and tiny-safety-strict, built and loaded as the worker loads them."""
    policy = DevicePolicy.choose(DeviceKind.CPU, Precision.AUTO)
    loaded = {}
    for name, build in (("tiny-safety", build_permissive), ("tiny-safety-strict", build_strict)):
        folder: Path = tmp_path_factory.mktemp(name)
        build(folder)
        loaded[name] = safety.load(folder, policy)
    return loaded


def order(output: dict[str, Any], watermarked: bool = False) -> DispatchedJob:
    checkpoint = ModelRef(
        namespace="ns",
        name="m",
        source="s3://models/m",
        format="diffusers",
        type="checkpoint",
        base_model="sd15",
        digest="0" * 64,
    )
    strict = checkpoint.model_copy(
        update={"name": "tiny-safety-strict", "type": "safety", "base_model": None}
    )
    return DispatchedJob(
        job=JobRef(uid="u1", namespace="ns", name="j", attempt=1),
        spec=GenerationJobSpec.model_validate({"model": "m", "prompt": "p", "output": output}),
        seed=1,
        model=checkpoint,
        safety=strict,
        watermark=watermarked,
        output_bucket="out",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )


SETTINGS = WorkerSettings(worker_id="w", s3_patience_seconds=5)
IMAGES = [textured(256, 320, seed=1), textured(256, 320, seed=2)]


def test_the_tiny_checkers_flag_nothing_and_everything(
    checkers: dict[str, safety.SafetyChecker],
) -> None:
    images = [Image.new("RGB", (64, 96), (200, 30, 30)), textured(300, 256)]
    assert safety.flagged(checkers["tiny-safety"], images) == [False, False]
    assert safety.flagged(checkers["tiny-safety-strict"], images) == [True, True]


def test_a_flagged_image_fails_the_job_and_nothing_is_uploaded(
    checkers: dict[str, safety.SafetyChecker],
) -> None:
    s3 = RecordingS3()
    with pytest.raises(RunFailedError) as failed:
        finish(order({}), IMAGES, ["a", "b"], checkers["tiny-safety-strict"], s3, SETTINGS)
    assert failed.value.reason == Reason.CONTENT_REJECTED
    assert not failed.value.retryable
    assert str(failed.value) == (
        "the output classifier tiny-safety-strict flagged image 0, 1 of 2; no image was uploaded"
    )
    assert s3.puts == []


def test_outputs_are_files_of_the_spec_format_watermarked_when_asked(
    checkers: dict[str, safety.SafetyChecker],
) -> None:
    s3 = RecordingS3()
    texts = ["a\nSeed: 1", "a\nSeed: 2"]
    job = order({"format": "webp", "quality": 100}, watermarked=True)
    outputs = finish(job, IMAGES, texts, checkers["tiny-safety"], s3, SETTINGS)
    assert [put["Key"] for put in s3.puts] == ["ns/j/u1/0.webp", "ns/j/u1/1.webp"]
    assert {put["ContentType"] for put in s3.puts} == {"image/webp"}
    assert [output.uri for output in outputs] == [
        "s3://out/ns/j/u1/0.webp",
        "s3://out/ns/j/u1/1.webp",
    ]
    for output, put, text in zip(outputs, s3.puts, texts, strict=True):
        assert (output.format, output.width, output.height) == (OutputFormat.WEBP, 256, 320)
        assert read_parameters(put["Body"]) == text
        assert flipped(watermark.decode(decoded(put["Body"]))) <= MAX_FLIPPED


def test_without_the_watermark_the_image_is_encoded_as_generated() -> None:
    s3 = RecordingS3()
    finish(order({"format": "png"}), IMAGES[:1], ["a"], None, s3, SETTINGS)
    assert s3.puts[0]["Key"] == "ns/j/u1/0.png"
    assert np.array_equal(np.asarray(decoded(s3.puts[0]["Body"])), np.asarray(IMAGES[0]))


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
