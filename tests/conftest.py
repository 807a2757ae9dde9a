"""Session fixtures: the local stack, reused when running, else started once and stopped
after. A run may spread over pytest-xdist workers (`make pytest`): see tests/support/session.py."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hack.models.provision import ensure_models
from hack.models.registry import RegisteredModel
from tests.support.kube_api import GENERATION_JOBS, MODEL_CACHES, NAMESPACES
from tests.support.platform import Platform
from tests.support.session import StackStartError, begin_run, end_run, ensure_stack, run_lock
from tests.support.stack import Kubectl, stack_exports

# Tests that stop and restart the stack run after all others, in one process.
DISRUPTIVE = "disruptive"


def in_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{DISRUPTIVE}: stops and restarts the stack; runs last")
    if not in_xdist_worker(config):
        begin_run()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not in_xdist_worker(session.config):
        end_run()


# Before xdist's own hook, which reads the groups.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Disruptive tests last, and never beside other workers. A module whose tests share
    a module-scoped fixture (a release, a real worker) runs in one worker: the fixture is
    set up once, and its tests run in their order."""
    items.sort(key=lambda item: item.get_closest_marker(DISRUPTIVE) is not None)
    if not in_xdist_worker(config):
        return
    for item in items:
        if item.get_closest_marker(DISRUPTIVE):
            item.add_marker(
                pytest.mark.skip(reason="stops the stack under other workers: run without -n")
            )
        if shares_a_module_fixture(item) and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def shares_a_module_fixture(item: pytest.Item) -> bool:
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is None:
        return False
    return any(
        definition.scope in ("module", "package")
        for definitions in fixtures.name2fixturedefs.values()
        for definition in definitions
    )


@pytest.fixture(scope="session")
def local_stack() -> Iterator[dict[str, str]]:
    """The stack's environment (what `make env` exports), with the stack up.

    A stack that is already running (`make up-infra`) is reused and left running; one
    the run starts is stopped when the run ends. Tests run their own operators and
    workers: platform processes of `make up` are stopped for the run and started again
    after it.
    """
    try:
        ensure_stack()
    except StackStartError as error:
        pytest.fail(f"the local stack did not start:\n{error}")
    exports = stack_exports()
    saved = {key: os.environ.get(key) for key in exports}
    os.environ.update(exports)
    yield exports
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def kubectl(local_stack: dict[str, str]) -> Kubectl:
    return Kubectl(kubeconfig=local_stack["KUBECONFIG"])


@contextmanager
def fresh_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A new namespace, deleted afterwards (without waiting)."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    kubectl.api.create_namespace(name)
    yield name
    delete_namespace(kubectl, name)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace for one test."""
    with fresh_namespace(kubectl) as name:
        yield name


@pytest.fixture(scope="module")
def module_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace for the tests of one module (that share an operator, a real
    worker and an API: their start is paid once)."""
    with fresh_namespace(kubectl) as name:
        yield name


def delete_namespace(kubectl: Kubectl, name: str) -> None:
    """Deletes a test namespace without waiting. Its diffleet resources are deleted first
    and their finalizers dropped: the test's operator, which would remove them, may be
    stopped already, and while it runs it puts its finalizer back on any resource that
    is not being deleted yet (as the namespace's own deletion reaches them only later)."""
    for resource in (GENERATION_JOBS, MODEL_CACHES):
        kubectl.api.drop_finalizers(resource, name, kubectl.api.delete_all(resource, name))
    kubectl.api.delete(NAMESPACES, name)


@pytest.fixture
def platform(namespace: str) -> Iterator[Platform]:
    """An operator and workers for this test's namespace, stopped after the test."""
    running = Platform(namespace=namespace, job_namespaces=[namespace])
    yield running
    running.stop_all()


@pytest.fixture(scope="session")
def models(local_stack: dict[str, str]) -> dict[str, RegisteredModel]:
    """The test models of `make models` (tiny-sd15, tiny-sdxl, tiny-lora, tiny-canny and
    micro-shapes), registered in diffleet-system. One process at a time: the first one
    builds what is missing, the others find it built."""
    with run_lock("models"):
        return ensure_models()
