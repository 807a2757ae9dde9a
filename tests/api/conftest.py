"""Fixtures of the API tests. Starting an API process takes seconds (imports), so most
tests share one (`api`, its job watcher off) and make their own tenant; tests of the
watcher, webhooks and live progress start their own (`platform_api`), which follows only
the test's namespace and speaks on the test's queues."""

import uuid
from collections.abc import Iterator

import pytest

from tests.api.support import Api, ApiTenant, create_tenant, model_cache, spawn_api
from tests.support.stack import Kubectl


@pytest.fixture(scope="session")
def api(local_stack: dict[str, str]) -> Iterator[Api]:
    [started] = spawn_api(f"shared-{uuid.uuid4().hex[:6]}", watcher="false")
    yield started
    started.process.stop()


@pytest.fixture
def platform_api(namespace: str) -> Iterator[Api]:
    [started] = spawn_api(namespace)
    yield started
    started.process.stop()


@pytest.fixture
def tenant(namespace: str, kubectl: Kubectl) -> ApiTenant:
    """A free-tier tenant owning the test's namespace (1000 credits), with an sd15 and an
    sdxl ModelCache to submit against."""
    model_cache(kubectl, namespace, "sd15-test", "sd15")
    model_cache(kubectl, namespace, "sdxl-test", "sdxl")
    return create_tenant(namespace)
