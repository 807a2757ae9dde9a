"""The dispatch loop: takes admitted jobs from the tier queues and places them on workers.

Each tier queue is consumed with a prefetch window into an in-memory buffer; the
messages stay unacknowledged in RabbitMQ until their job is dispatched, so a crash
loses nothing and queue depth keeps meaning "waiting work". A cycle:

1. order the tiers that have work by their credits (diffleet_operator.credits);
2. for each buffered job in that order, drop it if stale (cancelled, finished, deleted,
   an older attempt, already dispatched) and place it on a snapshot of the fleet;
3. dispatch the first job that places: publish to the worker's queue with confirm,
   assume the slot, patch status Scheduled (with Queued, when its admission was still
   held: diffleet_operator.held), then acknowledge the admission message (only then: a
   failed write is tried again with backoff while the message stays unacknowledged).

An entry whose handling raises is tried again on a later cycle when the failure is
transient, else its job is quarantined and its message dropped
(diffleet_operator.quarantine): one job never stops the loop.

A job that places nowhere stays buffered (and in its queue) until the fleet changes; its
held admission, if any, is written as Queued then.

A job that an earlier operator may have dispatched before it died (its message was
redelivered, or the job is older than this process) is first looked for on the workers'
Leases, and adopted where it already runs, so a restart never runs a job twice at once.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, auto
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import TypeAdapter

from diffleet_core.broker import Handler, parse_or_reject, settle
from diffleet_core.messages import AdmittedJob, DispatchedJob, JobRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import ANY_GPU_CLASS, JobPhase, Tier
from diffleet_operator import metrics, status
from diffleet_operator.admission import NotReady, ResolvedModel, resolve_model
from diffleet_operator.admitter import Admitter
from diffleet_operator.credits import TierCredits
from diffleet_operator.fleet import WorkerView
from diffleet_operator.held import Admission
from diffleet_operator.jobs import TrackedJob, behind
from diffleet_operator.logs import about_job
from diffleet_operator.placement import Decision, Requirements, place
from diffleet_operator.quarantine import Loop, describe, dropped_message, transient
from diffleet_operator.runtime import Runtime

logger = logging.getLogger(__name__)
ADMITTED_JOB = TypeAdapter(AdmittedJob)

# How long a message may wait for its job's status to catch up before it is re-read.
CATCH_UP = timedelta(seconds=30)
# Status writes of dispatched jobs in flight at once.
WRITES_IN_FLIGHT = 16
# A Scheduled write that failed transiently is tried again after these pauses (doubling).
WRITE_RETRY_FIRST_SECONDS = 0.5
WRITE_RETRY_MAX_SECONDS = 8.0


@dataclass
class Buffered:
    message: AbstractIncomingMessage
    admitted: AdmittedJob


class Step(Enum):
    """What considering one buffered entry did."""

    DISPATCHED = auto()
    DROPPED = auto()
    WAITING = auto()


class Verdict(Enum):
    DISPATCH = auto()
    DEFER = auto()
    STALE = auto()


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    job: TrackedJob | None = None
    # The job's held admission, claimed: whoever dispatches the job writes it.
    admission: Admission | None = None


@dataclass(frozen=True)
class JobModels:
    model: ResolvedModel
    loras: list[ResolvedModel]
    control_net: ResolvedModel | None


@dataclass(frozen=True)
class Placement:
    """A job's models and the worker chosen for it (`decision` says why that one)."""

    models: JobModels
    worker: WorkerView
    decision: Decision


class Dispatcher:
    def __init__(self, rt: Runtime, admitter: Admitter) -> None:
        self.rt = rt
        self.admitter = admitter
        self.buffers: dict[Tier, list[Buffered]] = {tier: [] for tier in Tier}
        self.credits = TierCredits(rt.operator.tier_weights)
        self.wake = asyncio.Event()
        self.dispatched: dict[str, int] = {}
        self._scheduling: dict[str, asyncio.Event] = {}
        self._declared: set[str] = set()
        self._started = time.monotonic()
        self._started_at = status.now()
        self._writers = asyncio.Semaphore(WRITES_IN_FLIGHT)
        self._writing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for tier, queue in self.rt.broker.topology.tier_queues().items():
            await self.rt.broker.consume(
                queue, self._receiver(tier), prefetch=self.rt.operator.prefetch_per_tier
            )

    def _receiver(self, tier: Tier) -> Handler:
        async def receive(message: AbstractIncomingMessage) -> None:
            admitted = await parse_or_reject(message, ADMITTED_JOB)
            if admitted is None:
                dropped_message(Loop.DISPATCH, message.routing_key or "")
                return
            self.buffers[tier].append(Buffered(message, admitted))
            self.wake.set()

        return receive

    def forget(self, uid: str) -> None:
        self.dispatched.pop(uid, None)

    async def scheduled(self, uid: str, within: float = 10.0) -> None:
        """Waits until a dispatch of `uid` in progress has written Scheduled, so a worker's
        fast "started" is never overwritten by it."""
        if event := self._scheduling.get(uid):
            await asyncio.wait_for(event.wait(), timeout=within)

    async def run(self) -> None:
        while True:
            self.wake.clear()
            self.rt.fleet.changed.clear()
            try:
                progressed = await self.cycle()
            except Exception:
                logger.exception("dispatch cycle failed")
                progressed = False
            if not progressed:
                await _first_of(self.wake, self.rt.fleet.changed, within=1.0)

    async def cycle(self) -> bool:
        """Dispatches at most one job; True if something changed (dispatched or dropped)."""
        waiting = {tier for tier, buffer in self.buffers.items() if buffer}
        if not waiting:
            return False
        fleet = self.rt.fleet.snapshot()
        if not any(worker.free_slots for worker in fleet):
            # Nothing can place: every admitted job waits, so it shows Queued. The
            # fleet's next change wakes the loop.
            self.admitter.show_queued(self.rt.held.claim_all())
            return False
        progressed = False
        for tier in self.credits.order(waiting):
            for entry in list(self.buffers[tier]):
                try:
                    step = await self._consider(tier, entry, fleet)
                except Exception as error:  # noqa: BLE001 - one job never stops dispatch
                    step = await self._failed(tier, entry, error)
                if step is Step.DISPATCHED:
                    return True
                progressed = progressed or step is Step.DROPPED
        return progressed

    async def _consider(self, tier: Tier, entry: Buffered, fleet: list[WorkerView]) -> Step:
        """Drops the entry if stale, dispatches it if it places, else leaves it waiting."""
        judged = await self._judge(entry)
        job, admission = judged.job, judged.admission
        if judged.verdict is Verdict.STALE:
            self.buffers[tier].remove(entry)
            await settle(entry.message)
            return Step.DROPPED
        if judged.verdict is Verdict.DEFER or job is None:
            return Step.WAITING
        if self._maybe_dispatched_before(entry, job):
            adopted = await self._adopt_if_running(entry, job, fleet, admission)
            if adopted is None:
                self._hold_again(admission)
                return Step.WAITING
            if adopted:
                self.buffers[tier].remove(entry)
                return Step.DISPATCHED
        placement = self._placement(job, tier, fleet)
        if placement is None:
            if admission is not None:
                self.admitter.show_queued([admission])  # it waits
            return Step.WAITING
        self.buffers[tier].remove(entry)
        await self._dispatch(entry, job, placement, admission)
        self.credits.spend(tier)
        return Step.DISPATCHED

    async def _failed(self, tier: Tier, entry: Buffered, error: Exception) -> Step:
        """An entry whose handling raised: a transient failure leaves it buffered (the
        next cycle, at least a second later when nothing else moves, tries it again);
        any other quarantines its job and drops its message."""
        ref = entry.admitted.job
        cached = self.rt.jobs.get(ref.uid)
        await self.rt.quarantine.job_of_message(
            Loop.DISPATCH, ref, cached.body if cached else None, error
        )
        if transient(error):
            return Step.WAITING
        if entry in self.buffers[tier]:
            self.buffers[tier].remove(entry)
        await settle(entry.message)
        return Step.DROPPED

    def _hold_again(self, admission: Admission | None) -> None:
        if admission is not None:
            self.rt.held.hold(admission)

    def _maybe_dispatched_before(self, entry: Buffered, job: TrackedJob) -> bool:
        """An earlier operator may have dispatched this job: its message was delivered
        before, or the job was created before this process started (admitted again)."""
        return bool(entry.message.redelivered) or job.created < self._started_at

    async def _judge(self, entry: Buffered) -> Judgement:
        ref = entry.admitted.job
        job = self.rt.jobs.get(ref.uid)
        held, coming = self._queued_here(ref)
        caught_up = status.now() - entry.admitted.admitted_at > CATCH_UP
        if job is None or (caught_up and not coming and behind(job, ref.attempt)):
            body = await self.rt.kube.get_job(ref.namespace, ref.name)
            if body is None or body["metadata"]["uid"] != ref.uid:
                return Judgement(Verdict.STALE)
            job = self.rt.jobs.observe(body)
            held, coming = self._queued_here(ref)
            if not coming and behind(job, ref.attempt):
                return Judgement(Verdict.STALE)
        if not job.active or self.dispatched.get(ref.uid, 0) >= ref.attempt:
            return Judgement(Verdict.STALE)
        if ref.attempt < job.status.attempts:
            return Judgement(Verdict.STALE)
        if held:
            # Pending on the API server, Queued here: this attempt's admission is held.
            return Judgement(Verdict.DISPATCH, job, self.rt.held.claim(ref.uid, ref.attempt))
        if behind(job, ref.attempt):
            return Judgement(Verdict.DEFER, job)
        if job.phase is not JobPhase.QUEUED:
            return Judgement(Verdict.STALE)
        return Judgement(Verdict.DISPATCH, job)

    def _queued_here(self, ref: JobRef) -> tuple[bool, bool]:
        """Whether this attempt's admission is held here, and whether its Queued status is
        held here or on its way to the API server (then Pending there is not stale)."""
        held = self.rt.held.holds(ref.uid, ref.attempt)
        return held, held or self.admitter.writing_queued(ref.uid)

    async def _adopt_if_running(
        self,
        entry: Buffered,
        job: TrackedJob,
        fleet: list[WorkerView],
        admission: Admission | None,
    ) -> bool | None:
        """A predecessor may have dispatched the job and died before writing Scheduled.
        If a worker already runs the job, adopt it there (True); if the fleet is not yet
        fully known after a restart, wait (None); else dispatch (False)."""
        if time.monotonic() - self._started < self.rt.operator.leader_lease_seconds:
            return None
        holder = next((w for w in fleet if job.uid in w.in_flight), None)
        if holder is None:
            return False
        self.dispatched[job.uid] = entry.admitted.job.attempt
        done = self._scheduling[job.uid] = asyncio.Event()
        await self._writers.acquire()
        await self._record_scheduled(entry, job, holder, done, admission)
        logger.info(
            "adopted: already running on %s",
            holder.worker_id,
            extra=about_job(job.namespace, job.name, job.uid),
        )
        return True

    def _placement(self, job: TrackedJob, tier: Tier, fleet: list[WorkerView]) -> Placement | None:
        """Where the job goes now; None while a model is not Ready or no worker can take it."""
        models = self._models(job)
        if models is None:
            return None
        decision = place(self._requirements(job, tier, models), fleet)
        if decision.worker is None:
            return None
        return Placement(models, decision.worker, decision)

    def _models(self, job: TrackedJob) -> JobModels | None:
        system = self.rt.settings.system_namespace

        def resolve(name: str) -> ResolvedModel | None:
            found = resolve_model(self.rt.models, job.namespace, name, system)
            return None if isinstance(found, NotReady) else found

        model = resolve(job.spec.model)
        loras = [resolve(lora.model) for lora in job.spec.loras or []]
        control = resolve(job.spec.control_net.model) if job.spec.control_net else None
        if model is None or None in loras or (job.spec.control_net and control is None):
            return None
        return JobModels(model, [lora for lora in loras if lora is not None], control)

    def _requirements(self, job: TrackedJob, tier: Tier, models: JobModels) -> Requirements:
        pools = set(self.rt.settings.tier_pools.get(tier, []))
        if models.model.spec.pools:
            pools &= set(models.model.spec.pools)
        if job.spec.gpu_class != ANY_GPU_CLASS:
            pools &= {job.spec.gpu_class}
        return Requirements(
            model_digest=models.model.ref.digest,
            vram_gib=models.model.spec.vram_gib,
            pools=frozenset(pools),
        )

    async def _dispatch(
        self,
        entry: Buffered,
        job: TrackedJob,
        placement: Placement,
        admission: Admission | None,
    ) -> None:
        rt = self.rt
        models, worker = placement.models, placement.worker
        ref = entry.admitted.job
        # A held admission's seed is not on the API server yet.
        seed = admission.seed if admission is not None else job.status.seed
        order = DispatchedJob(
            job=ref,
            spec=job.spec,
            seed=seed if seed is not None else 0,
            model=models.model.ref,
            loras=[lora.ref for lora in models.loras],
            control_net=models.control_net.ref if models.control_net else None,
            output_bucket=rt.settings.buckets.outputs,
            deadline=job.created + timedelta(seconds=job.spec.timeout_seconds),
        )
        queue = rt.broker.topology.worker_queue(worker.worker_id)
        done = self._scheduling[ref.uid] = asyncio.Event()
        # Assumed before the publish returns: a fast worker's report on the job may come
        # first, and it must find the job here (and free its slot), not the other way.
        rt.fleet.assume(worker.worker_id, ref.uid)
        self.dispatched[ref.uid] = ref.attempt
        if not await self._publish(entry, order, queue, worker):
            rt.fleet.forget(ref.uid)
            self.forget(ref.uid)
            self._hold_again(admission)
            self._settle(ref.uid, done)
            return
        metrics.PLACEMENTS.labels(placement.decision.outcome).inc()
        # The status write runs beside the loop (bounded), so the next placement need not
        # wait for the API server; a worker's "started" waits for it (`scheduled`).
        await self._writers.acquire()
        task = asyncio.create_task(self._record_scheduled(entry, job, worker, done, admission))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _publish(
        self, entry: Buffered, order: DispatchedJob, queue: str, worker: WorkerView
    ) -> bool:
        """Publishes the dispatch with confirm; on failure the admission goes back."""
        ref = entry.admitted.job
        try:
            if queue not in self._declared:
                await self.rt.broker.declare_worker_queue(worker.worker_id)
                self._declared.add(queue)
            await self.rt.broker.publish_to_queue(
                queue, order, message_id=f"{ref.uid}/{ref.attempt}"
            )
        except Exception:
            logger.exception(
                "dispatch to %s failed; back to its queue",
                queue,
                extra=about_job(ref.namespace, ref.name, ref.uid),
            )
            await settle(entry.message, requeue=True)
            return False
        return True

    def _settle(self, uid: str, done: asyncio.Event) -> None:
        done.set()
        self._scheduling.pop(uid, None)

    async def _record_scheduled(
        self,
        entry: Buffered,
        job: TrackedJob,
        worker: WorkerView,
        done: asyncio.Event,
        admission: Admission | None,
    ) -> None:
        """Writes Scheduled on the job (and Queued, from its held admission), then acks
        its admission message: never before, so an operator that dies meanwhile leaves
        the message to its successor, which adopts the job where it runs. A write that
        the API server refuses for good quarantines the job; the worker has it anyway,
        and its "started" report sets the status."""
        where = {"pool": worker.pool, "node": worker.node, "worker": worker.worker_id}
        if admission is None:
            patch = status.scheduled(job.status, job.generation, **where)
        else:
            patch = status.admitted_and_scheduled(job.status, job.generation, admission, **where)
        message = patch["message"]
        if admission is not None:
            message = f"{admission.summary}, {message}"  # one Event for both transitions
        try:
            if await self._write_scheduled(job, patch):
                if admission is not None:
                    metrics.TRANSITIONS.labels(JobPhase.QUEUED).inc()
                metrics.TRANSITIONS.labels(JobPhase.SCHEDULED).inc()
                metrics.DISPATCH_SECONDS.observe((status.now() - job.created).total_seconds())
                self.rt.kube.post_event(job.body, reason=Reason.DISPATCHED, message=message)
        except Exception as error:  # noqa: BLE001 - refused for good: quarantined
            await self.rt.quarantine.job(Loop.DISPATCH, job.body, error)
        finally:
            await settle(entry.message)
            self._settle(job.uid, done)
            self._writers.release()

    async def _write_scheduled(self, job: TrackedJob, patch: dict[str, Any]) -> bool:
        """Writes the patch, retrying transient failures with backoff (doubling up to
        `WRITE_RETRY_MAX_SECONDS`) while the job still waits for it; False when the job
        is gone or has moved on without it (a worker's report wrote Running or later)."""
        delay = WRITE_RETRY_FIRST_SECONDS
        while True:
            try:
                return await self.rt.kube.patch_job_status(job.namespace, job.name, patch)
            except Exception as error:
                if isinstance(error, ApiException) and error.status == 404:
                    return False
                if not transient(error):
                    raise
                logger.warning(
                    "Scheduled not written (%s); trying again in %.1fs",
                    describe(error),
                    delay,
                    extra=about_job(job.namespace, job.name, job.uid),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, WRITE_RETRY_MAX_SECONDS)
            current = self.rt.jobs.get(job.uid)
            if current is None or current.phase not in (JobPhase.PENDING, JobPhase.QUEUED):
                return False


async def _first_of(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
