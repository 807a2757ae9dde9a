"""Fixtures of the worker's platform tests: one operator with one real (diffusers, CPU)
worker shared by a module's jobs (the test models, `models`, are in tests/conftest.py)."""

import io
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from PIL import Image, ImageDraw

from diffleet_core.storage import S3Location
from tests.support.models import RegisteredModel
from tests.support.platform import Platform, Process, apply_job, wait_for_phase
from tests.support.stack import Kubectl

# Tiny models on a shared 2-core machine: generous, but bounded.
JOB_TIMEOUT = 180
# A real worker imports torch and diffusers before it announces itself.
WORKER_START = 240


@pytest.fixture(scope="module")
def studio(module_namespace: str, models: dict[str, RegisteredModel]) -> Iterator[Process]:
    """An operator and one real worker for the module's namespace; yields the worker."""
    platform = Platform(namespace=module_namespace, job_namespaces=[module_namespace])
    operator = platform.operator()
    worker = platform.worker("cpu", simulate=False)
    platform.wait_for_workers(operator, "t4", 1, timeout=WORKER_START)
    yield worker
    platform.stop_all()


def run_job(
    kubectl: Kubectl, namespace: str, name: str, timeout: float = JOB_TIMEOUT, **spec: Any
) -> dict[str, Any]:
    """Applies a job and returns its status once Succeeded."""
    apply_job(kubectl, namespace, name, **spec)
    return wait_for_phase(kubectl, namespace, name, "Succeeded", timeout=timeout)


def run_jobs(kubectl: Kubectl, namespace: str, jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Applies every job at once (the worker takes them in turn); their Succeeded status."""
    for name, spec in jobs.items():
        apply_job(kubectl, namespace, name, **spec)
    return {
        name: wait_for_phase(kubectl, namespace, name, "Succeeded", timeout=JOB_TIMEOUT)
        for name in jobs
    }


def read_output(output: dict[str, Any]) -> bytes:
    location = S3Location.parse(output["uri"])
    body: bytes = (
        boto3.client("s3").get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    )
    return body


def decode(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return image.copy()


def upload_image(image: Image.Image, name: str) -> str:
    """Puts a PNG into the uploads bucket; returns its s3:// URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    key = f"tests/{uuid.uuid4().hex[:8]}/{name}.png"
    boto3.client("s3").put_object(Bucket="diffleet-uploads", Key=key, Body=buffer.getvalue())
    return f"s3://diffleet-uploads/{key}"


def circle(colour: tuple[int, int, int]) -> Image.Image:
    """A 64x64 white image with a circle of `colour` in its middle."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), fill=colour)
    return image
