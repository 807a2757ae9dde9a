"""The periodic sweep: lost workers, overdue Queued writes, timeouts, TTLs, the
queue-depth gauge, which workers hold each model (ModelCache status) and the models to
pre-warm (ModelCache spec.warm).

It reads the watch-fed caches, so a restarted operator resumes every duty as soon as
its watches have listed the Leases and GenerationJobs. Duties run one after another,
each isolated, and the job duties one job at a time: a job whose handling fails is
quarantined (diffleet_operator.quarantine) and the sweep goes on.
"""

import asyncio
import logging
import time
from collections import Counter
from datetime import timedelta

from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.logs import about_job
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobPhase, Tier
from diffleet_operator import lifecycle, metrics, status
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.model_presence import ModelPresence
from diffleet_operator.quarantine import Loop, describe
from diffleet_operator.queue.admitter import Admitter
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.dispatcher import Dispatcher
from diffleet_operator.scheduler.prewarm import Prewarmer

logger = logging.getLogger(__name__)

QUEUE_DEPTH_EVERY_SECONDS = 5.0
MODELS_EVERY_SECONDS = 5.0
# A cancel requested this long after the job's last watch event has not been carried out
# by the watch handler (its status write failed): the sweep does it.
CANCEL_OVERDUE_SECONDS = 5.0


class Housekeeping:
    def __init__(self, rt: Runtime, dispatcher: Dispatcher, admitter: Admitter) -> None:
        self.rt = rt
        self.dispatcher = dispatcher
        self.admitter = admitter
        self._depth_measured = 0.0
        self._models_tended = 0.0
        # Pools that had workers: their gauge drops to 0 when they empty.
        self._pools: set[str] = set()
        self.presence = ModelPresence(rt)
        self.prewarmer = Prewarmer(rt)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("housekeeping sweep failed")
            await asyncio.sleep(self.rt.operator.housekeeping_interval_seconds)

    async def sweep(self) -> None:
        """Each duty in turn; one that fails does not keep the others from running."""
        duties = (
            self.recover_lost_workers,
            self.follow_queues,
            self.admitter.retry_waiting,
            self.show_overdue,
            self.tend_jobs,
            self.measure_queues,
            self.tend_models,
        )
        for duty in duties:
            try:
                await duty()
            except Exception as error:  # noqa: BLE001 - the next duty still runs
                logger.error("housekeeping: %s failed: %s", duty.__name__, describe(error))

    async def show_overdue(self) -> None:
        self.admitter.show_overdue()

    async def follow_queues(self) -> None:
        """Consumes the tenant queues of the Queued jobs (after a restart, those an earlier
        leader admitted or requeued): a lookup per job for queues already followed."""
        await self.rt.queues.follow(self.rt.jobs.queued())

    async def tend_jobs(self) -> None:
        """Overdue cancels, timeouts and TTLs, one job at a time: a job whose handling
        fails is quarantined (or, on a transient failure, tried on the next sweep)."""
        overdue = time.monotonic() - CANCEL_OVERDUE_SECONDS
        for job in self.rt.jobs.all():
            try:
                if lifecycle.cancel_requested(job) and job.seen_at < overdue:
                    await lifecycle.cancel(self.rt, job)
                else:
                    await self.expire(job)
            except Exception as error:  # noqa: BLE001 - one job never stops the sweep
                await self.rt.quarantine.job_failed(Loop.HOUSEKEEPING, job.body, error)

    async def tend_models(self) -> None:
        """ModelCache presence, then pre-warming, from one fleet snapshot, at most every
        `MODELS_EVERY_SECONDS`. An operator limited to some namespaces tends only their
        ModelCaches: its fleet is not the platform's."""
        if time.monotonic() - self._models_tended < MODELS_EVERY_SECONDS:
            return
        self._models_tended = time.monotonic()
        fleet = self.rt.fleet.snapshot()
        models = self.rt.models.in_namespaces(self.rt.operator.namespaces)
        await self.presence.refresh(fleet, models)
        await self.prewarmer.reconcile(fleet, models)

    async def recover_lost_workers(self) -> None:
        for worker in self.rt.fleet.expired(time.monotonic()):
            logger.warning("worker %s: Lease expired", worker.worker_id)
            metrics.WORKERS_LOST.labels(worker.pool).inc()
            await lifecycle.recover_jobs_of(self.rt, worker.worker_id, worker.jobs)
        self.count_workers()

    def count_workers(self) -> None:
        """The workers gauge per pool, 0 for a pool seen before and now empty."""
        counts = Counter(worker.pool for worker in self.rt.fleet.snapshot())
        self._pools |= counts.keys()
        for pool in self._pools:
            metrics.WORKERS.labels(pool).set(counts[pool])
            metrics.WORKERS_LOST.labels(pool)  # at 0 before a loss, so that one is an increase

    async def expire(self, job: TrackedJob) -> None:
        """Fails jobs past spec.timeoutSeconds; deletes finished jobs past their TTL."""
        now = status.now()
        if job.active and now > job.created + timedelta(seconds=job.spec.timeout_seconds):
            message = f"not finished within timeoutSeconds={job.spec.timeout_seconds}"
            await lifecycle.stop(self.rt, job, JobPhase.FAILED, Reason.TIMEOUT, message)
            return
        completed = job.status.completed_at
        ttl = timedelta(seconds=job.spec.ttl_seconds_after_finished)
        if job.phase.finished and completed is not None and now > completed + ttl:
            try:
                await self.rt.kube.delete_job(job.namespace, job.name, job.uid)
            except ApiException as error:
                logger.warning(
                    "TTL deletion failed: %s",
                    error.reason,
                    extra=about_job(job.namespace, job.name, job.uid),
                )
            self.rt.jobs.remove(job.uid)

    async def measure_queues(self) -> None:
        if time.monotonic() - self._depth_measured < QUEUE_DEPTH_EVERY_SECONDS:
            return
        self._depth_measured = time.monotonic()
        ready = Counter[Tier]()
        # The tenant queues, and the per-tier queues of releases before them (drained).
        queues = self.rt.queues.declared
        queues.update((name, tier) for tier, name in self.rt.broker.topology.tier_queues().items())
        for queue, tier in queues.items():
            ready[tier] += await self.rt.broker.queue_depth(queue)
        for tier in Tier:
            buffered = len(self.dispatcher.buffers.by_tier[tier])
            metrics.QUEUE_DEPTH.labels(tier).set(ready[tier] + buffered)
