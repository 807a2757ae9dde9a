"""Fixtures of the worker's platform tests: one operator with one real (diffusers, CPU)
worker shared by the run's jobs (the test models, `models`, are in tests/conftest.py)."""

import io
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from PIL import Image, ImageDraw

from diffleet_core.storage import S3Location
from diffleet_worker.encoding import read_parameters
from tests.conftest import fresh_namespace
from tests.support.models import RegisteredModel
from tests.support.platform import Platform, Process, apply_job, wait_for_phase
from tests.support.stack import Kubectl

# Tiny models on a shared 2-core machine: generous, but bounded.
JOB_TIMEOUT = 180
# A real worker imports torch and diffusers before it announces itself.
WORKER_START = 240


@dataclass
class Studio:
    """One operator and one real worker for the whole run, serving a namespace for each
    module that uses them: the worker's start (torch, diffusers) is paid once, and each
    module's jobs keep their names in their own namespace."""

    worker: Process
    fleet: str  # the platform's namespace: its workers' Leases and its queues' prefix
    namespaces: dict[str, str]


@pytest.fixture(scope="session")
def shared_studio(
    request: pytest.FixtureRequest, kubectl: Kubectl, models: dict[str, RegisteredModel]
) -> Iterator[Studio]:
    modules = {
        item.module.__name__
        for item in request.session.items
        if isinstance(item, pytest.Function) and "shared_studio" in item.fixturenames
    }
    with ExitStack() as stack:
        fleet = stack.enter_context(fresh_namespace(kubectl))
        namespaces = {module: stack.enter_context(fresh_namespace(kubectl)) for module in modules}
        platform = Platform(namespace=fleet, job_namespaces=list(namespaces.values()))
        stack.callback(platform.stop_all)
        operator = platform.operator()
        worker = platform.worker("cpu", simulate=False)
        platform.wait_for_workers(operator, "t4", 1, timeout=WORKER_START)
        yield Studio(worker, fleet, namespaces)


@pytest.fixture(scope="module")
def studio(shared_studio: Studio) -> Process:
    """The studio's real worker (its log shows what each job's pipeline received)."""
    return shared_studio.worker


@pytest.fixture(scope="module")
def studio_namespace(request: pytest.FixtureRequest, shared_studio: Studio) -> str:
    """This module's namespace, served by the studio."""
    return shared_studio.namespaces[request.module.__name__]


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


def parameters_of(status: dict[str, Any]) -> str:
    """The generation parameters written into a job's first output file."""
    return read_parameters(read_output(status["outputs"][0])) or ""


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
