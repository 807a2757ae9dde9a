"""PoolController: worker pods to each pool's decision, against a fake API server.

It never removes a worker with jobs, removes idle ones only after scaleDownDelaySeconds
(cordoned first, so the dispatcher skips them), replaces pods that finished, marks busy
pods do-not-disrupt, and writes a pool's status and Events only when they change.
"""

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.fleet import WorkerInventory
from diffleet_operator.autoscaler.controller import PoolController
from diffleet_operator.autoscaler.decision import PoolDecision
from diffleet_operator.cache.fleet import FleetInventory
from diffleet_operator.cache.pools import PoolIndex, PoolRecord
from diffleet_operator.cache.worker_pods import WorkerPods

NAMESPACE = "diffleet-system"
renewals = itertools.count()


class FakeKube:
    """The calls the controller makes, recorded; pods as the API server would store them."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.failing_pools: set[str] = set()
        self.gpupools: dict[str, dict[str, Any]] = {}

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        pool = body["metadata"]["labels"]["diffleet.io/gpupool"]
        if pool in self.failing_pools:
            raise ApiException(status=500, reason="boom")
        stored = body | {"status": {"phase": "Pending"}}
        self.pods[body["metadata"]["name"]] = stored
        return stored

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.pods.pop(name, None)

    async def annotate_pod(
        self, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> dict[str, Any] | None:
        pod = self.pods[name]
        kept = pod["metadata"].get("annotations") or {}
        merged = {k: v for k, v in (kept | annotations).items() if v is not None}
        pod["metadata"] = pod["metadata"] | {"annotations": merged}
        return pod

    async def patch_gpu_pool_finalizers(
        self, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        body = self.gpupools[name]
        assert body["metadata"]["resourceVersion"] == resource_version
        version = str(int(resource_version) + 1)
        body["metadata"] |= {"finalizers": finalizers, "resourceVersion": version}
        return body

    async def patch_gpu_pool_status(self, name: str, status: dict[str, Any]) -> None:
        self.statuses.append((name, status))

    def post_event(self, body: dict[str, Any], reason: str, message: str) -> None:
        self.events.append((body["metadata"]["name"], reason, message))


class Setup:
    def __init__(self, *pools: tuple[str, int], status_interval: float = 0) -> None:
        """`pools`: (name, scaleDownDelaySeconds); statuses written at any rate unless
        `status_interval` says otherwise."""
        self.kube = FakeKube()
        self.pools = PoolIndex()
        self.pods = WorkerPods()
        self.fleet = FleetInventory(now=0)
        for name, delay in pools:
            self.kube.gpupools[name] = pool_body(name, delay)
            self.pools.upsert(PoolRecord.of(self.kube.gpupools[name]))
        self.controller = PoolController(
            self.kube,  # type: ignore[arg-type]
            self.pools,
            self.pods,
            self.fleet,
            namespace=NAMESPACE,
            image="diffleet-worker:test",
            wake=lambda: None,
            status_interval=status_interval,
        )

    def apply(self, **desired: int) -> None:
        asyncio.run(self.controller.apply({pool: decision(pool, n) for pool, n in desired.items()}))

    def names(self, pool: str) -> list[str]:
        return sorted(pod.name for pod in self.pods.of_pool(pool) if pod.active)

    def bind_and_announce(self, name: str, jobs: Iterable[str] = ()) -> None:
        """The pod is scheduled and running, and its worker has announced itself."""
        body = self.kube.pods[name]
        body["spec"]["nodeName"] = "kwok-t4-0"
        body["status"] = {"phase": "Running"}
        self.pods.upsert(body)
        pool = body["metadata"]["labels"]["diffleet.io/gpupool"]
        worker = WorkerInventory(worker_id=name, pool=pool, vram_gib=16, jobs_in_flight=list(jobs))
        self.fleet.upsert(worker, renewal=str(next(renewals)), duration=10, now=0)

    def draining(self, name: str) -> bool:
        return next(w.draining for w in self.fleet.snapshot() if w.worker_id == name)


def pool_body(name: str, delay: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"},
        "spec": {"gpuType": "t4", "vramGiB": 16, "maxReplicas": 8, "scaleDownDelaySeconds": delay},
    }


def decision(pool: str, desired: int) -> PoolDecision:
    return PoolDecision(
        pool=pool, desired_replicas=desired, queued_jobs=desired, running_jobs=0, at_max=False
    )


def test_scale_up_creates_the_missing_pods_at_once_with_one_event() -> None:
    setup = Setup(("t4a", 0))
    setup.apply(t4a=3)
    assert len(setup.names("t4a")) == 3
    assert all(name.startswith("t4a-") for name in setup.names("t4a"))
    assert setup.kube.events == [("t4a", "ScaledUp", "desired replicas 0 -> 3")]
    ((_, status),) = setup.kube.statuses
    assert status["desiredReplicas"] == status["replicas"] == 3
    assert status["readyReplicas"] == 0
    assert status["lastScaleTime"]
    setup.apply(t4a=3)
    assert len(setup.kube.pods) == 3  # counted before any watch event: no more created


def test_scale_in_removes_idle_workers_only_cordoned_first() -> None:
    setup = Setup(("t4a", 0))
    setup.apply(t4a=3)
    busy, *idle = setup.names("t4a")
    for name in setup.names("t4a"):
        setup.bind_and_announce(name, jobs=["job-1"] if name == busy else [])
    setup.apply(t4a=0)
    assert sorted(setup.kube.deleted) == sorted(idle)
    assert setup.names("t4a") == [busy]
    assert all(setup.draining(name) for name in idle)
    assert not setup.draining(busy)
    annotations = setup.kube.pods[busy]["metadata"]["annotations"]
    assert annotations == {"karpenter.sh/do-not-disrupt": "true"}
    assert setup.kube.events[-1] == ("t4a", "ScaledDown", "desired replicas 3 -> 0")


def test_idle_workers_stay_for_scale_down_delay() -> None:
    setup = Setup(("t4a", 60))
    setup.apply(t4a=2)
    for name in setup.names("t4a"):
        setup.bind_and_announce(name)
    setup.apply(t4a=0)
    assert setup.kube.deleted == []
    assert len(setup.names("t4a")) == 2


def test_pods_not_yet_bound_go_first() -> None:
    setup = Setup(("t4a", 0))
    setup.apply(t4a=2)
    announced, pending = setup.names("t4a")
    setup.bind_and_announce(announced)
    setup.apply(t4a=1)
    assert setup.kube.deleted == [pending]
    assert setup.names("t4a") == [announced]


def test_a_finished_pod_is_replaced() -> None:
    setup = Setup(("t4a", 0))
    setup.apply(t4a=1)
    (failed,) = setup.names("t4a")
    body = setup.kube.pods[failed]
    body["status"] = {"phase": "Failed"}
    setup.pods.upsert(body)
    setup.apply(t4a=1)
    assert setup.kube.deleted == [failed]
    (replacement,) = setup.names("t4a")
    assert replacement != failed


def test_status_is_written_when_it_changes_at_most_once_a_second() -> None:
    setup = Setup(("t4a", 60), status_interval=0.2)
    decisions = {"t4a": decision("t4a", 1)}

    async def scenario() -> None:
        woken = asyncio.Event()
        setup.controller._wake = woken.set
        await setup.controller.apply(decisions)
        await setup.controller.apply(decisions)
        assert len(setup.kube.statuses) == 1  # unchanged: not written again
        (name,) = setup.names("t4a")
        setup.bind_and_announce(name)
        await setup.controller.apply(decisions)  # readyReplicas changed, too soon
        assert len(setup.kube.statuses) == 1
        await asyncio.wait_for(woken.wait(), timeout=5)  # a round is asked for later
        await setup.controller.apply(decisions)
        assert [status["readyReplicas"] for _, status in setup.kube.statuses] == [0, 1]

    asyncio.run(scenario())


def test_one_failing_pool_does_not_stop_the_others() -> None:
    setup = Setup(("t4a", 0), ("t4b", 0))
    setup.kube.failing_pools.add("t4a")
    setup.apply(t4a=2, t4b=2)
    assert setup.names("t4a") == []
    assert len(setup.names("t4b")) == 2


def test_deleting_a_pool_waits_for_running_jobs_then_deletes_every_pod() -> None:
    setup = Setup(("t4a", 60))
    setup.apply(t4a=2)
    body = setup.kube.gpupools["t4a"]
    assert body["metadata"]["finalizers"] == ["diffleet.io/worker-pods"]
    busy, idle = setup.names("t4a")
    setup.bind_and_announce(busy, jobs=["job-1"])
    setup.bind_and_announce(idle)
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    setup.pools.upsert(PoolRecord.of(body))  # as the watch shows it
    setup.apply(t4a=1)
    assert setup.kube.deleted == []
    assert setup.draining(busy)
    assert setup.draining(idle)
    setup.fleet.forget("job-1")
    setup.apply(t4a=0)
    assert sorted(setup.kube.deleted) == sorted([busy, idle])
    assert body["metadata"]["finalizers"] == ["diffleet.io/worker-pods"]  # not gone yet
    for name in (busy, idle):
        setup.pods.remove(name)  # as the watch reports
    setup.apply(t4a=0)
    assert body["metadata"]["finalizers"] == []
    assert len(setup.kube.deleted) == 2
