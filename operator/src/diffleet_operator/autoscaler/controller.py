"""The pool controller: carries out the autoscaler's decisions with worker pods.

Each pool's pods are managed directly, as KubeRay manages its workers, not through a
Deployment: a scale-in then removes exactly the workers chosen for being idle, where a
ReplicaSet would pick its own victims. For each decision:

- pods that finished (Failed, Succeeded) are deleted; they and pods being deleted do not
  count, so missing replicas (a killed pod, a lost node) are created again;
- up to desiredReplicas, new pods are created at once (one step to the target);
- above it, only idle pods are removed, those with no job for scaleDownDelaySeconds:
  first those not yet bound to a node, then those whose worker has not announced
  itself, then the longest idle. Each is cordoned in the fleet inventory first (the
  dispatcher skips it) in the same step of the event loop that found it idle, so no job
  can reach it in between; then exactly those pods are deleted, and their workers drain
  on SIGTERM. A worker with jobs, its Lease's or dispatched ones, is never chosen;
- busy pods carry karpenter.sh/do-not-disrupt (written only when it changes), so node
  consolidation cannot evict them either;
- the GPUPool's status is written when it changes and at most once a second, and an
  Event (ScaledUp, ScaledDown) when desiredReplicas changes.

A GPUPool carries the controller's finalizer (FINALIZER, added before its first pod).
Deleting it cordons all its workers (no more jobs reach them); once none runs a job, its
pods are deleted, and once they are gone the finalizer is removed and the GPUPool goes.

A failure on one pool is logged and tried again on the next round; it never stops the
others.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from diffleet_core.fleet import DO_NOT_DISRUPT_ANNOTATION
from diffleet_core.resources import gpu_pool
from diffleet_operator import metrics
from diffleet_operator.autoscaler.decision import PoolDecision
from diffleet_operator.autoscaler.pods import pod_name, worker_pod
from diffleet_operator.autoscaler.pool_status import PoolCounts, pool_status
from diffleet_operator.cache.fleet import FleetInventory, WorkerView
from diffleet_operator.cache.pools import PoolIndex, PoolRecord
from diffleet_operator.cache.worker_pods import WorkerPod, WorkerPods
from diffleet_operator.kube import Kube
from diffleet_operator.quarantine import describe, transient
from diffleet_operator.status import now, timestamp

logger = logging.getLogger(__name__)

FINALIZER = "diffleet.io/worker-pods"
# A pool's status is written at most this often.
STATUS_INTERVAL_SECONDS = 1.0
# Pod creations and deletions in flight at once, per pool.
CONCURRENT_WRITES = 16

T = TypeVar("T")


class PoolController:
    def __init__(
        self,
        kube: Kube,
        pools: PoolIndex,
        pods: WorkerPods,
        fleet: FleetInventory,
        *,
        namespace: str,
        image: str,
        wake: Callable[[], None],
        status_interval: float = STATUS_INTERVAL_SECONDS,
    ) -> None:
        """`wake` asks for another round (the autoscaler's trigger): a status write put
        off by the once-a-second limit (`status_interval`) is written then."""
        self.kube = kube
        self.pools = pools
        self.pods = pods
        self.fleet = fleet
        self.namespace = namespace
        self.image = image
        self._wake = wake
        self.status_interval = status_interval
        # pod name -> since when (time.monotonic()) it has had no job.
        self._idle_since: dict[str, float] = {}
        # pool -> the status last written (or found stored) and when it was written.
        self._written: dict[str, tuple[Mapping[str, Any], float]] = {}
        self._wake_pending: set[str] = set()

    async def apply(self, decisions: Mapping[str, PoolDecision]) -> None:
        for pool, decision in decisions.items():
            record = self.pools.record(pool)
            if record is None:
                continue
            try:
                if record.deleting:
                    await self._finalize(record)
                else:
                    await self._hold(record)  # before its first pod
                    await self._reconcile(record, decision)
            except Exception as error:  # noqa: BLE001 - one pool never stops the others
                how = "trying again" if transient(error) else "failed"
                logger.warning("GPUPool %s: reconciliation %s: %s", pool, how, describe(error))

    async def _hold(self, record: PoolRecord) -> None:
        """Adds the finalizer unless the GPUPool has it (sent with its resourceVersion:
        a conflict raises, and is tried again on a later round)."""
        if FINALIZER in record.finalizers:
            return
        body = await self.kube.patch_gpu_pool_finalizers(
            record.name, [*record.finalizers, FINALIZER], record.resource_version
        )
        self.pools.upsert(PoolRecord.of(body))

    async def _finalize(self, record: PoolRecord) -> None:
        """A GPUPool being deleted: drained, then released."""
        if FINALIZER not in record.finalizers or await self._drain(record.name):
            return
        kept = [name for name in record.finalizers if name != FINALIZER]
        await self.kube.patch_gpu_pool_finalizers(record.name, kept, record.resource_version)
        self._written.pop(record.name, None)
        logger.info("GPUPool %s drained: its finalizer is removed", record.name)

    async def _drain(self, pool: str) -> int:
        """For a GPUPool being deleted: cordons all its workers, and once none runs a job
        deletes its pods. How many pods remain (0: done)."""
        pods = self.pods.of_pool(pool)
        for pod in pods:
            self.fleet.cordon(pod.name)
        workers = self._workers()
        if any(_jobs(workers.get(pod.name)) for pod in pods):
            return len(pods)  # their jobs finish first
        await self._delete([pod for pod in pods if not pod.deleting])
        return len(self.pods.of_pool(pool))

    async def _reconcile(self, record: PoolRecord, decision: PoolDecision) -> None:
        pods = self.pods.of_pool(record.name)
        await self._delete([pod for pod in pods if pod.terminal and not pod.deleting])
        active = [pod for pod in pods if pod.active]
        self._track_idleness(active, self._workers(), time.monotonic())
        desired = decision.desired_replicas
        scaled = False
        if len(active) < desired:
            await self._create(record, desired - len(active))
            scaled = True
        elif len(active) > desired:
            chosen = self._choose_idle(record, active, len(active) - desired)
            await self._delete(chosen)
            scaled = bool(chosen)
        await self._mark_busy(record, self.pods.of_pool(record.name))
        await self._report(record, decision, scaled)

    def _workers(self) -> dict[str, WorkerView]:
        return {worker.worker_id: worker for worker in self.fleet.snapshot()}

    def _choose_idle(
        self, record: PoolRecord, active: Sequence[WorkerPod], excess: int
    ) -> list[WorkerPod]:
        """Up to `excess` pods idle for scaleDownDelaySeconds, cordoned. No await here:
        between reading the fleet and cordoning, nothing can be dispatched."""
        workers = self._workers()
        now_ = time.monotonic()
        self._track_idleness(active, workers, now_)  # as of now: the fleet may have changed
        delay = record.spec.scale_down_delay_seconds
        idle = [
            pod
            for pod in active
            if not _jobs(workers.get(pod.name)) and now_ - self._idle_since[pod.name] >= delay
        ]
        idle.sort(key=lambda pod: (bool(pod.node), pod.name in workers, self._idle_since[pod.name]))
        chosen = idle[:excess]
        for pod in chosen:
            self.fleet.cordon(pod.name)
        return chosen

    def _track_idleness(
        self, pods: Sequence[WorkerPod], workers: Mapping[str, WorkerView], now_: float
    ) -> None:
        self._idle_since = {
            name: since for name, since in self._idle_since.items() if self.pods.get(name)
        }
        for pod in pods:
            if _jobs(workers.get(pod.name)):
                self._idle_since.pop(pod.name, None)
            else:
                self._idle_since.setdefault(pod.name, now_)

    async def _create(self, record: PoolRecord, count: int) -> None:
        bodies = [
            worker_pod(
                name=pod_name(record.name),
                namespace=self.namespace,
                pool=record.name,
                pool_uid=record.uid,
                spec=record.spec,
                image=self.image,
            )
            for _ in range(count)
        ]
        created, error = await _bounded(
            self.kube.create_pod(self.namespace, body) for body in bodies
        )
        for body in created:
            self.pods.upsert(body)
        if created:
            logger.info("GPUPool %s: created %d worker pod(s)", record.name, len(created))
        if error is not None:
            raise error

    async def _delete(self, pods: Sequence[WorkerPod]) -> None:
        """Deletes the pods (their workers drain on SIGTERM); one that fails is uncordoned
        and stays a replica."""

        async def delete(pod: WorkerPod) -> None:
            try:
                await self.kube.delete_pod(self.namespace, pod.name)
            except BaseException:
                self.fleet.uncordon(pod.name)
                raise
            self.pods.deleted(pod.name)
            self._idle_since.pop(pod.name, None)

        _, error = await _bounded(delete(pod) for pod in pods)
        if error is not None:
            raise error
        if pods:
            logger.info("deleted worker pod(s) %s", ", ".join(pod.name for pod in pods))

    async def _mark_busy(self, record: PoolRecord, pods: Sequence[WorkerPod]) -> None:
        """Busy pods carry do-not-disrupt; a pod idle for scaleDownDelaySeconds (that it
        keeps, as minReplicas) loses it. Written only when it changes."""
        workers = self._workers()
        now_ = time.monotonic()
        delay = record.spec.scale_down_delay_seconds
        changes: list[tuple[str, str | None]] = []
        for pod in pods:
            if not pod.active:
                continue
            busy = bool(_jobs(workers.get(pod.name)))
            idle_for = now_ - self._idle_since.get(pod.name, now_)
            if busy and not pod.do_not_disrupt:
                changes.append((pod.name, "true"))
            elif pod.do_not_disrupt and not busy and idle_for >= delay:
                changes.append((pod.name, None))
        patched, error = await _bounded(
            self.kube.annotate_pod(self.namespace, name, {DO_NOT_DISRUPT_ANNOTATION: value})
            for name, value in changes
        )
        for body in patched:
            if body is not None:  # None: the pod is gone
                self.pods.upsert(body)
        if error is not None:
            raise error

    async def _report(self, record: PoolRecord, decision: PoolDecision, scaled: bool) -> None:
        """Writes the status when it changed (at most once a second; a change put off is
        written on a later round) and an Event when desiredReplicas changed."""
        pods = [pod for pod in self.pods.of_pool(record.name) if pod.active]
        workers = self._workers()
        counts = PoolCounts(
            replicas=len(pods),
            ready=sum(pod.name in workers for pod in pods),
            busy=sum(bool(_jobs(workers.get(pod.name))) for pod in pods),
            desired=decision.desired_replicas,
            queued_jobs=decision.queued_jobs,
        )
        _show(record.name, counts)
        previous, written_at = self._written.get(record.name, (record.status, 0.0))
        stamp = timestamp(now())
        status = pool_status(
            previous,
            counts,
            generation=record.generation,
            scale_down_delay=record.spec.scale_down_delay_seconds,
            scaled_at=stamp if scaled else None,
            now=stamp,
        )
        if status == previous:
            return
        wait = written_at + self.status_interval - time.monotonic()
        if wait > 0:
            self._wake_later(record.name, wait)
            return
        await self.kube.patch_gpu_pool_status(record.name, status)
        self._written[record.name] = (status, time.monotonic())
        self._event(record, previous.get("desiredReplicas", 0), counts.desired)

    def _event(self, record: PoolRecord, before: int, after: int) -> None:
        if after > before:
            self.kube.post_event(
                record.reference, gpu_pool.SCALED_UP, f"desired replicas {before} -> {after}"
            )
        elif after < before:
            self.kube.post_event(
                record.reference, gpu_pool.SCALED_DOWN, f"desired replicas {before} -> {after}"
            )

    def _wake_later(self, pool: str, delay: float) -> None:
        if pool in self._wake_pending:
            return
        self._wake_pending.add(pool)

        def wake() -> None:
            self._wake_pending.discard(pool)
            self._wake()

        asyncio.get_running_loop().call_later(delay, wake)


def _show(pool: str, counts: PoolCounts) -> None:
    metrics.POOL_REPLICAS.labels(pool).set(counts.replicas)
    metrics.POOL_READY_REPLICAS.labels(pool).set(counts.ready)
    metrics.POOL_BUSY_REPLICAS.labels(pool).set(counts.busy)


def _jobs(worker: WorkerView | None) -> frozenset[str]:
    return frozenset() if worker is None else worker.jobs


async def _bounded(calls: Iterable[Awaitable[T]]) -> tuple[list[T], BaseException | None]:
    """Runs the calls, CONCURRENT_WRITES at a time: the results of those that succeeded,
    and the first error if any failed."""
    semaphore = asyncio.Semaphore(CONCURRENT_WRITES)

    async def one(call: Awaitable[T]) -> T:
        async with semaphore:
            return await call

    results = await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
    errors = [result for result in results if isinstance(result, BaseException)]
    done = [result for result in results if not isinstance(result, BaseException)]
    return done, errors[0] if errors else None
