"""The autoscaler's loop: decides each GPUPool's desired replicas whenever demand moves
(`trigger`, called on every admission, dispatch and result, coalesced into one round)
and on a slow sweep, and hands the decisions to the pool controller, which creates and
removes worker pods (diffleet_operator.autoscaler.controller).

A round reads the operator's caches only (the dispatch buffers, the fleet, the jobs, the
model index, the GPUPools): it makes no API call of its own, but for the condition of
jobs that wait for a pool at its maximum (reason PoolAtMaxReplicas), written once per job
when it changes. Its inputs and outputs are metrics (diffleet_operator.metrics), so that
an external scaler (KEDA, an HPA) can scale on them instead.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from diffleet_core.logs import about_job
from diffleet_core.messages import JobFailed, JobStarted, JobSucceeded
from diffleet_core.resources.conditions import ConditionStatus, Reason
from diffleet_core.resources.generation_job import JobPhase, Tier
from diffleet_operator import metrics, status
from diffleet_operator.autoscaler.decision import Plan, PoolDecision, decide
from diffleet_operator.autoscaler.demand import WaitingJob
from diffleet_operator.autoscaler.timings import Timings
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.quarantine import describe
from diffleet_operator.scheduler.needs import waiting_job_needs
from diffleet_operator.training.demand import weighted

if TYPE_CHECKING:
    from diffleet_operator.runtime import Runtime
    from diffleet_operator.scheduler.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

# Rounds run at most this often: a burst of triggers makes one round, not one each.
MIN_ROUND_SECONDS = 0.05
# Condition writes of waiting jobs in flight at once.
WRITES_IN_FLIGHT = 8


class PoolScaler(Protocol):
    """What carries the decisions out (diffleet_operator.autoscaler.controller)."""

    async def apply(self, decisions: Mapping[str, PoolDecision]) -> None: ...


class Autoscaler:
    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.timings = Timings(rt.operator)
        self._wake = asyncio.Event()
        # When the first trigger since the last round came (time.monotonic()).
        self._triggered_at: float | None = None
        # uid -> the PoolAtMaxReplicas message written on the job (or on its way).
        self._noted: dict[str, str] = {}
        self._writers = asyncio.Semaphore(WRITES_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pools_shown: set[str] = set()

    def trigger(self) -> None:
        """Demand moved: decide again soon. Cheap and synchronous."""
        if self._triggered_at is None:
            self._triggered_at = time.monotonic()
        self._wake.set()

    def observe(self, event: JobStarted | JobSucceeded | JobFailed) -> None:
        """A worker's report: the runs' timings, and a trigger."""
        if isinstance(event, JobStarted):
            hot = next(
                (w.hot_models for w in self.rt.fleet.snapshot() if w.worker_id == event.worker),
                frozenset[str](),
            )
            self.timings.started(event.job.uid, event.at, hot)
        elif isinstance(event, JobSucceeded):
            self.timings.succeeded(event.job.uid, event.at, event.model_digest)
        else:
            self.timings.ended(event.job.uid)
        self.trigger()

    async def run(self, dispatcher: "Dispatcher", scaler: PoolScaler) -> None:
        sweep = self.rt.operator.autoscaler_sweep_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=sweep)
            self._wake.clear()
            since, self._triggered_at = self._triggered_at or time.monotonic(), None
            try:
                await self.round(dispatcher, scaler, since)
            except Exception:
                logger.exception("autoscaler round failed")
            await asyncio.sleep(MIN_ROUND_SECONDS)

    async def round(self, dispatcher: "Dispatcher", scaler: PoolScaler, since: float) -> Plan:
        """Decides from the caches, applies, and measures trigger to applied."""
        rt = self.rt
        fleet = rt.fleet.snapshot()
        plan = decide(rt.pools, self._waiting(dispatcher), fleet, self.timings.estimates())
        await scaler.apply(plan.pools)
        now = time.monotonic()
        metrics.AUTOSCALER_DECISION_SECONDS.observe(now - since)
        for name, decision in plan.pools.items():
            live = sum(1 for worker in fleet if worker.pool == name)
            self.timings.pool_seen(name, decision.desired_replicas, live, now)
        self._show(plan)
        self._note_at_max(plan)
        return plan

    def _waiting(self, dispatcher: "Dispatcher") -> list[WaitingJob]:
        """The admitted jobs not yet dispatched, highest tier first, with what they need: those
        in the dispatcher's buffers, those admitted that it has not received yet (held), then
        the Queued ones it has not buffered (beyond its prefetch window, or waiting out a
        requeue's backoff), then the queued trainings (weighted). A job whose model is not Ready
        (it waits for that, not for a worker) is left out."""
        found: list[tuple[Tier, TrackedJob]] = []
        seen: set[str] = set()
        for tier, buffer in dispatcher.buffers.by_tier.items():
            for entry in buffer:
                ref = entry.admitted.job
                if ref.uid in seen or dispatcher.dispatched.get(ref.uid) == ref.attempt:
                    continue
                job = self.rt.jobs.get(ref.uid)
                if job and _waits(job, ref.attempt):
                    seen.add(ref.uid)
                    found.append((tier, job))
        for admission in self.rt.held.admissions():  # published, not yet received
            job = self.rt.jobs.get(admission.uid)
            if admission.uid not in seen and job and _waits(job, admission.attempt):
                seen.add(admission.uid)
                found.append((admission.tier, job))
        for job in self.rt.jobs.queued():
            queued_at = job.status.tier
            if job.uid in seen or queued_at is None or job.deleting:
                continue
            if dispatcher.dispatched.get(job.uid, 0) > job.status.attempts:
                continue  # dispatched; its Scheduled write is on its way
            found.append((queued_at, job))
        found.sort(key=lambda pair: pair[0].rank)
        waiting = []
        for tier, job in found:
            needs = waiting_job_needs(self.rt, job, tier)
            if needs is not None:
                waiting.append(WaitingJob(job.uid, needs))
        # Trainings, below every tier, with their own weight (diffleet_operator.training).
        trainings = self.rt.trainings.waiting_needs()
        return waiting + weighted(trainings, self.rt.operator.training_demand_weight)

    def _show(self, plan: Plan) -> None:
        for name, decision in plan.pools.items():
            metrics.POOL_DESIRED_REPLICAS.labels(name).set(decision.desired_replicas)
            metrics.POOL_QUEUED_JOBS.labels(name).set(decision.queued_jobs)
            metrics.POOL_AT_MAX_REPLICAS.labels(name).set(float(decision.at_max))
        for gone in self._pools_shown - plan.pools.keys():
            metrics.forget_pool(gone)
        self._pools_shown = set(plan.pools)

    def _note_at_max(self, plan: Plan) -> None:
        """Queued jobs that wait for a pool at its maximum say so (condition Scheduled,
        False, PoolAtMaxReplicas), written when that changes; never a write per round."""
        self._noted = {uid: note for uid, note in self._noted.items() if uid in plan.waiting_for}
        for uid, pool in plan.waiting_for.items():
            decision = plan.pools[pool]
            job = self.rt.jobs.get(uid)
            if not decision.at_max or job is None or job.phase is not JobPhase.QUEUED:
                continue
            message = (
                f"waiting for a worker of GPUPool {pool}, at maxReplicas"
                f" ({decision.desired_replicas})"
            )
            if self._noted.get(uid) == message or _shows(job, message):
                continue
            self._noted[uid] = message
            task = asyncio.create_task(self._write_note(uid, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write_note(self, uid: str, message: str) -> None:
        async with self._writers:
            job = self.rt.jobs.get(uid)
            if job is None or job.phase is not JobPhase.QUEUED or self._noted.get(uid) != message:
                return
            patch = status.waiting_for_pool(job.status, job.generation, message)
            try:
                await self.rt.kube.patch_job_status(job.namespace, job.name, patch)
            except Exception as error:  # noqa: BLE001 - a note is tried again next round
                self._noted.pop(uid, None)
                logger.warning(
                    "PoolAtMaxReplicas not written: %s",
                    describe(error),
                    extra=about_job(job.namespace, job.name, job.uid),
                )


def _waits(job: TrackedJob, attempt: int) -> bool:
    """The job waits for a worker in this attempt (admitted: Queued, or held Pending)."""
    return (
        job.active
        and not job.deleting
        and job.phase in (JobPhase.PENDING, JobPhase.QUEUED)
        and job.status.attempts <= attempt
    )


def _shows(job: TrackedJob, message: str) -> bool:
    return any(
        condition.type == status.SCHEDULED
        and condition.status is ConditionStatus.FALSE
        and condition.reason == Reason.POOL_AT_MAX_REPLICAS
        and condition.message == message
        for condition in job.status.conditions or []
    )
