"""The real worker's cache tiers, graceful shutdown and out-of-memory path, through the
whole platform: a test whose workers need settings of their own has its own operator and
fresh workers; the prewarm, pickle and SIGTERM tests share one operator and two fresh
workers (cancellation runs on the shared worker of test_generation.py)."""

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.groups import DIFFUSERS
from tests.support.models import RegisteredModel, register_pickle_model
from tests.support.platform import (
    Platform,
    Process,
    apply_job,
    job_status,
    register_model,
    wait_for_phase,
)
from tests.support.polling import eventually
from tests.support.stack import Kubectl
from tests.worker.conftest import JOB_TIMEOUT, WORKER_START, run_job

pytestmark = DIFFUSERS

SMALL = {"width": 64, "height": 64, "steps": 4}


def served(worker: Process, tier: str) -> float:
    return worker.metric("diffleet_worker_model_served_total", tier=tier) or 0.0


def downloads(worker: Process) -> float:
    return worker.metric("diffleet_worker_model_downloads_total") or 0.0


def test_models_come_cold_then_hot_then_warm_and_a_corrupt_copy_is_fetched_again(
    kubectl: Kubectl, namespace: str, platform: Platform, models: dict[str, RegisteredModel]
) -> None:
    operator = platform.operator()
    # A hot budget of one byte: each load evicts every idle model from memory.
    worker = platform.worker("cpu", simulate=False, hot_budget_bytes="1")
    platform.wait_for_workers(operator, "t4", 1, timeout=WORKER_START)

    first = run_job(kubectl, namespace, "cold", model="tiny-sd15", seed=1, **SMALL)
    assert (served(worker, "cold"), downloads(worker)) == (1, 1)

    run_job(kubectl, namespace, "hot", model="tiny-sd15", seed=1, **SMALL)
    assert (served(worker, "hot"), downloads(worker)) == (1, 1)

    run_job(kubectl, namespace, "evicts", model="micro-shapes", seed=1, **SMALL)
    again = run_job(kubectl, namespace, "warm", model="tiny-sd15", seed=1, **SMALL)
    assert (served(worker, "warm"), downloads(worker)) == (1, 2)
    assert again["outputs"][0]["sha256"] == first["outputs"][0]["sha256"]

    run_job(kubectl, namespace, "evicts-again", model="micro-shapes", seed=1, **SMALL)
    digest = models["tiny-sd15"].digest
    weights = sorted((platform.cache_root() / "cpu" / digest).rglob("*.safetensors"))
    assert weights, f"no cached copy of tiny-sd15 under {platform.cache_root()}"
    corrupt(weights[0])
    repaired = run_job(kubectl, namespace, "repaired", model="tiny-sd15", seed=1, **SMALL)
    assert worker.metric("diffleet_worker_model_corrupt_total") == 1
    assert downloads(worker) == 3
    assert repaired["outputs"][0]["sha256"] == first["outputs"][0]["sha256"]


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_out_of_memory_retries_with_slicing_then_fails_with_its_reason(
    kubectl: Kubectl, namespace: str, platform: Platform, models: dict[str, RegisteredModel]
) -> None:
    operator = platform.operator()
    # Budget between a 64x64 run's working set with and without slicing and tiling
    # (device.MemoryBudget.estimate: 2,359,296 and 2,129,920 bytes).
    worker = platform.worker("cpu", simulate=False, memory_budget_bytes="2200000")
    platform.wait_for_workers(operator, "t4", 1, timeout=WORKER_START)
    run_job(kubectl, namespace, "fits-sliced", model="tiny-sd15", seed=1, **SMALL)
    assert worker.metric("diffleet_worker_out_of_memory_total", retried="true") == 1
    apply_job(kubectl, namespace, "too-big", model="tiny-sd15", width=128, height=128, steps=4)
    failed = wait_for_phase(kubectl, namespace, "too-big", "Failed", timeout=JOB_TIMEOUT)
    assert failed["reason"] == "OutOfMemory"


def test_a_worker_with_concurrency_two_runs_two_jobs_at_once(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = platform.operator()
    register_model(kubectl, namespace, "m")
    # Simulated: a diffusers worker runs one job at a time and refuses concurrency 2.
    platform.worker("pair", concurrency="2", sim_step_seconds="0.1", sim_load_seconds="0")
    platform.wait_for_workers(operator, "t4", 1)
    for name in ("left", "right"):
        apply_job(kubectl, namespace, name, model="m", width=64, height=64, steps=40)

    def both_running() -> bool:
        phases = {job_status(kubectl, namespace, name).get("phase") for name in ("left", "right")}
        return phases == {"Running"}

    eventually(both_running, timeout=30, what="both jobs Running at once")
    left, right = (
        wait_for_phase(kubectl, namespace, name, "Succeeded") for name in ("left", "right")
    )
    assert left["worker"] == right["worker"] == "pair"
    spans = [
        (datetime.fromisoformat(status["startedAt"]), datetime.fromisoformat(status["completedAt"]))
        for status in (left, right)
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)


@pytest.fixture(scope="module")
def pair(
    kubectl: Kubectl, module_namespace: str, models: dict[str, RegisteredModel]
) -> Iterator[dict[str, Process]]:
    """One operator and two fresh real workers (1 s of SIGTERM grace) serving the module's
    namespace, for the tests below, which need no other settings: their starts are paid
    once. The SIGTERM test stops one of them, so it comes last."""
    platform = Platform(namespace=module_namespace, job_namespaces=[module_namespace])
    try:
        operator = platform.operator()
        workers = {
            name: platform.worker(name, simulate=False, shutdown_grace_seconds="1")
            for name in ("first", "second")
        }
        platform.wait_for_workers(operator, "t4", 2, timeout=WORKER_START)
        yield workers
    finally:
        platform.stop_all()


def test_a_prewarmed_model_is_loaded_before_its_first_job_which_it_serves_hot(
    kubectl: Kubectl,
    module_namespace: str,
    pair: dict[str, Process],
    models: dict[str, RegisteredModel],
) -> None:
    spec = models["tiny-sd15"].spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    kept_hot = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "ModelCache",
        "metadata": {"name": "kept-hot"},
        "spec": spec | {"warm": {"replicas": 1}},
    }
    kubectl.apply(json.dumps(kept_hot), module_namespace)

    def warmed() -> list[str] | None:
        names = [
            name
            for name, worker in pair.items()
            if worker.metric("diffleet_worker_model_warmed_total", tier="cold") == 1
        ]
        return names or None

    (name,) = eventually(
        warmed, timeout=JOB_TIMEOUT, what="the model fetched from S3 and loaded, with no job"
    )

    def shown_hot() -> bool:
        found = kubectl.json("get", "modelcache", "kept-hot", "-n", module_namespace)
        return bool(found["status"].get("hotWorkers") == [name])

    eventually(shown_hot, timeout=30, what=f"ModelCache kept-hot hot on {name}")
    run_job(kubectl, module_namespace, "first", model="kept-hot", seed=1, **SMALL)
    worker = pair[name]
    assert (served(worker, "hot"), served(worker, "cold"), downloads(worker)) == (1, 0, 1)


def test_a_pickle_model_is_refused_and_its_job_waits(
    kubectl: Kubectl, module_namespace: str, pair: dict[str, Process], tmp_path: Path
) -> None:
    register_pickle_model(module_namespace, "pickled", tmp_path)

    def refused() -> dict[str, object] | None:
        found = kubectl.json("get", "modelcache", "pickled", "-n", module_namespace)
        status: dict[str, object] = found.get("status", {})
        return status if status.get("phase") == "Failed" else None

    status = eventually(refused, timeout=60, what="pickle ModelCache Failed")
    assert status["reason"] == "UnsafeFormat"
    assert "pickle" in str(status["message"])
    apply_job(kubectl, module_namespace, "never", model="pickled", **SMALL)
    pending = wait_for_phase(kubectl, module_namespace, "never", "Pending")
    assert pending["reason"] == "ModelNotReady"


def test_sigterm_hands_the_running_job_back_and_it_completes_elsewhere(
    kubectl: Kubectl, module_namespace: str, pair: dict[str, Process]
) -> None:
    apply_job(
        kubectl, module_namespace, "handed", model="tiny-sd15", width=64, height=64, steps=150
    )

    def running() -> dict[str, Any] | None:
        status = job_status(kubectl, module_namespace, "handed")
        return status if status.get("phase") == "Running" else None

    stopped = eventually(running, timeout=JOB_TIMEOUT, what="job handed Running")["worker"]
    pair[stopped].stop()
    status = wait_for_phase(kubectl, module_namespace, "handed", "Succeeded", timeout=JOB_TIMEOUT)
    assert status["worker"] != stopped
    assert status["attempts"] == 2
