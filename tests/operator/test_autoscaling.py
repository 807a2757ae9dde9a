"""The autoscaler's decisions on a real operator: GPUPools, GenerationJobs and simulated
workers started by the test (announcing a pool, as its pods would), read back from the
GPUPool's status and the jobs' conditions.

Each test's pools belong to its operator (label diffleet.io/fleet) and have names and GPU
types of their own: no node carries them, so the worker pods the operator creates for
them stay Pending and only the test's workers run jobs.
"""

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from diffleet_core.resources.gpu_pool import FLEET_LABEL
from tests.support.platform import (
    Platform,
    Process,
    apply_job,
    job_status,
    register_model,
    sample_name,
    wait_for_phase,
)
from tests.support.polling import eventually
from tests.support.stack import Kubectl

# Operator settings: a new worker is ready for a model 8 s after it is decided, a run
# takes 2 s (4 steps of 0.5 s, before any is observed): one hot worker drains 4 queued
# jobs (3 once runs are observed a little slower) in that time.
TIMINGS = {
    "autoscaler_worker_start_seconds": "6",
    "autoscaler_model_load_seconds": "2",
    "autoscaler_run_seconds": "2",
}
STEPS = 4
STEP_SECONDS = "0.5"


class Pools:
    """GPUPools created by one test, deleted after it (finalizers dropped: the test's
    operator, which would remove them, may be stopped already)."""

    def __init__(self, kubectl: Kubectl, fleet: str) -> None:
        self.kubectl = kubectl
        self.fleet = fleet
        self.tag = uuid.uuid4().hex[:6]
        self.names: list[str] = []

    def name(self, role: str) -> str:
        return f"{role}-{self.tag}"

    def create(self, role: str, *, gpu_type: str, **spec: Any) -> str:
        name = self.name(role)
        body = {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GPUPool",
            # Served by the test's operator alone (its fleet namespace).
            "metadata": {"name": name, "labels": {FLEET_LABEL: self.fleet}},
            "spec": {"gpuType": gpu_type, "vramGiB": 24} | spec,
        }
        self.kubectl.apply(json.dumps(body))
        self.names.append(name)
        return name

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.kubectl.json("get", "gpupool", name).get("status") or {}
        return status

    def desired(self, name: str) -> int | None:
        value = self.status(name).get("desiredReplicas")
        return None if value is None else int(value)

    def delete_all(self) -> None:
        for name in self.names:
            self.kubectl.run("delete", "gpupool", name, "--wait=false", check=False)
            self.kubectl.run(
                "patch", "gpupool", name, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False,
            )  # fmt: skip


@pytest.fixture
def pools(kubectl: Kubectl, platform: Platform) -> Iterator[Pools]:
    # The worker pods' ServiceAccount, in the fleet namespace (the test's).
    kubectl.run("create", "serviceaccount", "diffleet-worker", "-n", platform.namespace)
    created = Pools(kubectl, platform.namespace)
    yield created
    created.delete_all()


class DesiredWatch:
    """`kubectl get -w` on a GPUPool's status.desiredReplicas: each value as it is written,
    with when it arrived (time.monotonic()), without a poll's delay."""

    def __init__(self, kubectl: Kubectl, pool: str) -> None:
        template = '{.status.desiredReplicas}{"\\n"}'
        self.process = subprocess.Popen(
            ["kubectl", "--kubeconfig", kubectl.kubeconfig, "get", "gpupool", pool,
             "--watch", "-o", f"jsonpath={template}"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.seen: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.seen.append((time.monotonic(), line.strip()))

    def first(self, value: int) -> float | None:
        return next((at for at, seen in self.seen if seen == str(value)), None)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class DecisionWatch:
    """Polls the operator's diffleet_pool_desired_replicas{pool} every 20 ms beside the
    test (its decision, set as it is applied; the status write that follows is limited to
    one a second per pool) and notes when it first reaches `value`."""

    def __init__(self, operator: Process, pool: str, value: int) -> None:
        self.reached: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(operator, pool, value))
        self._thread.start()

    def _poll(self, operator: Process, pool: str, value: int) -> None:
        while self.reached is None and not self._stop.wait(0.02):
            if operator.metric("diffleet_pool_desired_replicas", pool=pool) == value:
                self.reached = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def gpu_type(pools: Pools, role: str) -> str:
    """A GPU type no other test uses."""
    return f"{role}-{pools.tag}"


def apply_jobs(kubectl: Kubectl, namespace: str, names: list[str], **spec: Any) -> None:
    """Many jobs in one kubectl call."""
    items = [
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GenerationJob",
            "metadata": {"name": name},
            "spec": {"prompt": "a red circle", "steps": STEPS} | spec,
        }
        for name in names
    ]
    kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), namespace)


def pool_worker(
    platform: Platform,
    worker_id: str,
    pool: str,
    gpu: str,
    *,
    step_seconds: str = STEP_SECONDS,
    hot: tuple[str, ...] = (),
) -> None:
    """A simulated worker of `pool`, as its pod would start it."""
    platform.worker(
        worker_id,
        pool=pool,
        gpu_type=gpu,
        vram_gib="24",
        sim_step_seconds=step_seconds,
        sim_hot_models=json.dumps(list(hot)),
    )


def desired_over(pools: Pools, name: str, seconds: float) -> set[int | None]:
    """Every desiredReplicas seen on the pool during `seconds` (an absence of change is
    observed over a window: nothing to wait for)."""
    seen: set[int | None] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.add(pools.desired(name))
    return seen


def test_burst_into_a_pool_at_zero_decides_max_within_two_seconds(
    kubectl: Kubectl, namespace: str, platform: Platform, pools: Pools
) -> None:
    gpu = gpu_type(pools, "burst")
    pool = pools.create("burst", gpu_type=gpu, minReplicas=0, maxReplicas=4)
    operator = platform.operator()
    register_model(kubectl, namespace, "m")
    eventually(lambda: pools.desired(pool) == 0, timeout=30, what="pool reconciled at zero")
    watch = DesiredWatch(kubectl, pool)
    decision = DecisionWatch(operator, pool, 4)
    try:
        eventually(lambda: watch.first(0), timeout=10, what="the watch on the pool")
        apply_job(kubectl, namespace, "burst-0", model="m", gpuClass=gpu)
        first = time.monotonic()  # the first job exists: its admission follows
        names = [f"burst-{i}" for i in range(1, 20)]
        apply_jobs(kubectl, namespace, names, model="m", gpuClass=gpu)
        decided = eventually(lambda: decision.reached, timeout=10, what="4 decided")
        written = eventually(lambda: watch.first(4), timeout=10, what="desiredReplicas 4")
    finally:
        decision.stop()
        watch.stop()
    print(
        f"first job created -> 4 replicas decided: {decided - first:.2f}s,"
        f" status.desiredReplicas 4 written: {written - first:.2f}s"
    )
    assert decided - first < 2.0
    eventually(lambda: pools.status(pool)["queuedJobs"] == 20, timeout=5, what="20 queued")
    name = "diffleet_autoscaler_decision_seconds"
    scraped = operator.metrics()  # one scrape: a round may end between two
    count, total = scraped.get(f"{name}_count"), scraped.get(f"{name}_sum")
    assert count
    assert total is not None
    within = {le: scraped[sample_name(f"{name}_bucket", le=le)] for le in ("0.1", "0.25", "2.0")}
    print(
        f"decision latency (trigger -> applied): {count:.0f} rounds, mean"
        f" {total / count * 1000:.0f} ms, within 100 ms: {within['0.1']:.0f},"
        f" within 250 ms: {within['0.25']:.0f}"
    )
    assert within["2.0"] == count


def test_hot_worker_drains_a_short_queue_and_a_long_one_scales_the_pool(
    kubectl: Kubectl, namespace: str, platform: Platform, pools: Pools
) -> None:
    gpu = gpu_type(pools, "hot")
    pool = pools.create("hot", gpu_type=gpu, minReplicas=0, maxReplicas=4)
    operator = platform.operator(**TIMINGS)
    digest = register_model(kubectl, namespace, "m")
    pool_worker(platform, "hot-w", pool, gpu, hot=(digest,))
    platform.wait_for_workers(operator, pool, 1)

    short = [f"short-{i}" for i in range(3)]
    apply_jobs(kubectl, namespace, short, model="m", gpuClass=gpu)
    seen: set[int | None] = set()

    def drained() -> bool:
        seen.add(pools.desired(pool))
        return all(job_status(kubectl, namespace, n).get("phase") == "Succeeded" for n in short)

    eventually(drained, timeout=60, interval=0.1, what="the short queue drained")
    assert max(d or 0 for d in seen) <= 1, f"the pool scaled for a short queue: {seen}"

    apply_jobs(kubectl, namespace, [f"long-{i}" for i in range(12)], model="m", gpuClass=gpu)
    eventually(lambda: pools.desired(pool) == 4, timeout=10, what="the long queue scales it")


def test_jobs_land_only_on_pools_their_tier_and_type_allow(
    kubectl: Kubectl, namespace: str, platform: Platform, pools: Pools
) -> None:
    kubectl.run("label", "namespace", namespace, "diffleet.io/tier=pro")
    shared, other = gpu_type(pools, "shared"), gpu_type(pools, "other")
    pro_only = pools.create("pro", gpu_type=shared, maxReplicas=1, tiers=["pro"])
    free_only = pools.create("free", gpu_type=shared, maxReplicas=1, tiers=["free"])
    other_type = pools.create("other", gpu_type=other, maxReplicas=1)
    operator = platform.operator()
    register_model(kubectl, namespace, "m")
    for pool, gpu in ((pro_only, shared), (free_only, shared), (other_type, other)):
        pool_worker(platform, f"{pool}-w", pool, gpu, step_seconds="0.1")
    for pool in (pro_only, free_only, other_type):
        platform.wait_for_workers(operator, pool, 1)

    pro, free = [f"pro-{i}" for i in range(3)], [f"free-{i}" for i in range(3)]
    typed = [f"typed-{i}" for i in range(2)]
    apply_jobs(kubectl, namespace, pro, model="m", gpuClass=shared)
    apply_jobs(kubectl, namespace, free, model="m", gpuClass=shared, priority="free")
    apply_jobs(kubectl, namespace, typed, model="m", gpuClass=other)
    expected = {name: pro_only for name in pro} | {name: free_only for name in free}
    expected |= {name: other_type for name in typed}
    landed = {
        name: wait_for_phase(kubectl, namespace, name, "Succeeded", timeout=90)["pool"]
        for name in expected
    }
    assert landed == expected


def test_a_pool_at_max_replicas_leaves_its_jobs_queued_saying_why(
    kubectl: Kubectl, namespace: str, platform: Platform, pools: Pools
) -> None:
    gpu = gpu_type(pools, "full")
    pool = pools.create("full", gpu_type=gpu, maxReplicas=1)
    operator = platform.operator()
    register_model(kubectl, namespace, "m")
    pool_worker(platform, "only-w", pool, gpu, step_seconds="2")
    platform.wait_for_workers(operator, pool, 1)

    names = [f"job-{i}" for i in range(3)]
    apply_jobs(kubectl, namespace, names, model="m", gpuClass=gpu)

    def waiting_with_reason() -> list[dict[str, Any]] | None:
        conditions = []
        for name in names:
            status = job_status(kubectl, namespace, name)
            if status.get("phase") != "Queued":
                continue
            found = {c["type"]: c for c in status.get("conditions", [])}.get("Scheduled")
            if found is None or found["reason"] != "PoolAtMaxReplicas":
                return None
            conditions.append(found)
        return conditions if len(conditions) == 2 else None

    conditions = eventually(waiting_with_reason, timeout=20, what="2 jobs Queued, at max")
    for condition in conditions:
        assert condition["status"] == "False"
        assert pool in condition["message"]
    assert pools.desired(pool) == 1


def test_a_tier_the_pool_excludes_never_scales_it(
    kubectl: Kubectl, namespace: str, platform: Platform, pools: Pools
) -> None:
    kubectl.run("label", "namespace", namespace, "diffleet.io/tier=enterprise")
    gpu = gpu_type(pools, "excl")
    pool = pools.create("excl", gpu_type=gpu, maxReplicas=4, tiers=["enterprise"])
    platform.operator()
    register_model(kubectl, namespace, "m")
    eventually(lambda: pools.desired(pool) == 0, timeout=30, what="pool reconciled at zero")

    apply_job(kubectl, namespace, "free", model="m", gpuClass=gpu, priority="free")
    wait_for_phase(kubectl, namespace, "free", "Queued")
    assert desired_over(pools, pool, 3.0) == {0}
    assert pools.status(pool)["queuedJobs"] == 0

    apply_job(kubectl, namespace, "enterprise", model="m", gpuClass=gpu)
    eventually(lambda: pools.desired(pool) == 1, timeout=10, what="the tier it allows scales it")
