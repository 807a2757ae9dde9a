"""Unit tests of the output upload's retries with an S3 client that fails on script: an
outage shorter than the patience is waited out; a longer one hands the job back."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from PIL import Image

from diffleet_core.messages import DispatchedJob, JobRef, ModelRef
from diffleet_core.resources.generation_job import GenerationJobSpec, OutputFormat
from diffleet_worker.encoding import encode
from diffleet_worker.outputs import upload_image
from diffleet_worker.runner import RunFailedError

UNREACHABLE = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
JPEG = encode(Image.new("RGB", (64, 96)), OutputFormat.JPEG, 90, "")


class ScriptedS3:
    """Raises the scripted errors in turn, then stores what is put."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.puts: list[dict[str, Any]] = []

    def put_object(self, **request: Any) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.puts.append(request)


def order() -> DispatchedJob:
    return DispatchedJob(
        job=JobRef(uid="u1", namespace="ns", name="j", attempt=1),
        spec=GenerationJobSpec.model_validate({"model": "m", "prompt": "a red circle"}),
        seed=1,
        model=ModelRef(
            namespace="ns",
            name="m",
            source="s3://models/m",
            format="diffusers",
            type="checkpoint",
            base_model="sd15",
            digest="0" * 64,
        ),
        output_bucket="out",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )


def test_an_outage_shorter_than_the_patience_is_waited_out() -> None:
    s3 = ScriptedS3([UNREACHABLE, UNREACHABLE])
    output = upload_image(s3, order(), 0, JPEG, OutputFormat.JPEG, "w", patience=30)
    assert output.uri == "s3://out/ns/j/u1/0.jpg"
    assert (output.format, output.width, output.height) == (OutputFormat.JPEG, 64, 96)
    assert [(put["Key"], put["ContentType"]) for put in s3.puts] == [
        ("ns/j/u1/0.jpg", "image/jpeg")
    ]


def test_an_outage_past_the_patience_hands_the_job_back_to_be_requeued() -> None:
    s3 = ScriptedS3([UNREACHABLE] * 1000)
    began = time.monotonic()
    with pytest.raises(RunFailedError) as failed:
        upload_image(s3, order(), 0, JPEG, OutputFormat.JPEG, "w", patience=1)
    assert failed.value.retryable
    assert "within 1s" in str(failed.value)
    assert time.monotonic() - began < 2
    assert s3.puts == []


def test_a_refusal_is_final_not_retried() -> None:
    denied = ClientError(
        {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "PutObject",
    )
    s3 = ScriptedS3([denied])
    with pytest.raises(ClientError):
        upload_image(s3, order(), 0, JPEG, OutputFormat.JPEG, "w", patience=30)
    assert s3.puts == []
