"""The dispatch loop: takes admitted jobs from the tier buffers (scheduler.buffer) and
places them on workers. A cycle:

1. order the buffered jobs fairly (scheduler.fair_order): tiers by their shares, then
   namespaces by theirs within a tier, skipping namespaces at their running-jobs limit;
2. plan the first `LOOKAHEAD` of them onto a snapshot of the fleet (scheduler.batching,
   scheduler.planning): which go now and where, grouped by model, the others waiting;
3. for each job of the window in that order that the plan sends somewhere or could not
   plan, drop it if stale (scheduler.staleness), adopt it where a worker already runs it
   after a restart (scheduler.adoption), and dispatch it to its planned worker if that
   worker, as the fleet is now, still takes it (scheduler.placement): publish the order
   (the job's models, its namespace's safety model and watermark) to the worker's queue
   with confirm, assume the slot (and the model hot there), then record Scheduled and
   acknowledge (scheduler.publishing).

An entry whose handling raises is tried again on a later cycle when the failure is
transient, else its job is quarantined and its message dropped
(diffleet_operator.quarantine): one job never stops the loop.

A job that places nowhere stays buffered (and in its queue) until the fleet changes; its
held admission, if any, is written as Queued then. A job the plan leaves waiting is not
judged this round; its held admission is written as Queued after the admitter's delay.
"""

import asyncio
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, auto

from opentelemetry.trace import Span, SpanKind

from diffleet_core import telemetry
from diffleet_core.broker import settle
from diffleet_core.logs import job_context
from diffleet_core.messages import DispatchedJob
from diffleet_core.policy import watermark_on
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import GenerationJobSpec, JobPhase, Tier
from diffleet_operator import lifecycle, metrics
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.quarantine import Loop, transient
from diffleet_operator.queue.admission import (
    JobModels,
    NotReady,
    resolve_job_models,
    seed_of,
)
from diffleet_operator.queue.admitter import Admitter
from diffleet_operator.queue.held import Admission
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.adoption import Adoption
from diffleet_operator.scheduler.batching import LOOKAHEAD, BatchPlanner, Planned
from diffleet_operator.scheduler.buffer import Buffered, TierBuffers
from diffleet_operator.scheduler.eligibility import job_requirements
from diffleet_operator.scheduler.fair_order import FairOrder
from diffleet_operator.scheduler.placement import Decision, place
from diffleet_operator.scheduler.publishing import Publisher
from diffleet_operator.scheduler.staleness import Verdict, judge
from diffleet_operator.styles import StyleRefused

logger = logging.getLogger(__name__)


class Step(Enum):
    """What considering one buffered entry did."""

    DISPATCHED = auto()
    DROPPED = auto()
    WAITING = auto()


@dataclass(frozen=True)
class Placement:
    """A job's models and the worker chosen for it (`decision` says why that one), and
    whether its namespace asks for the watermark."""

    models: JobModels
    worker: WorkerView
    decision: Decision
    watermark: bool
    # The job's spec with its style applied: what the worker runs.
    spec: GenerationJobSpec


class Dispatcher:
    def __init__(self, rt: Runtime, admitter: Admitter) -> None:
        self.rt = rt
        self.admitter = admitter
        self.buffers = TierBuffers()
        self.shares = FairOrder(rt, self.buffers.wake.set)
        self.publisher = Publisher(rt)
        self.adoption = Adoption(rt, self.publisher)
        self.planner = BatchPlanner(rt)

    @property
    def dispatched(self) -> dict[str, int]:
        """uid -> the attempt this operator last dispatched."""
        return self.publisher.dispatched

    async def start(self) -> None:
        await self.buffers.start(self.rt)

    def forget(self, uid: str) -> None:
        self.publisher.forget(uid)

    async def scheduled(self, uid: str, within: float = 10.0) -> None:
        await self.publisher.scheduled(uid, within)

    async def run(self) -> None:
        while True:
            self.buffers.wake.clear()
            self.rt.fleet.changed.clear()
            try:
                progressed = await self.cycle()
            except Exception:
                logger.exception("dispatch cycle failed")
                progressed = False
            if not progressed:
                await _first_of(self.buffers.wake, self.rt.fleet.changed, within=1.0)

    async def cycle(self) -> bool:
        """Dispatches a round of the plan; True if something changed (dispatched or
        dropped)."""
        waiting = self.buffers.waiting()
        if not waiting:
            return False
        fleet = self.rt.fleet.snapshot()
        if self.rt.dispatch_pause.paused or not any(worker.free_slots for worker in fleet):
            # Paused, or nothing can place: every admitted job waits, so it shows Queued.
            # The pause's end or the fleet's next change wakes the loop.
            self.admitter.show_queued(self.rt.held.claim_all())
            return False
        window = self._ordered()[:LOOKAHEAD]
        plan = self.planner.plan(window, fleet, self.shares.due(window))
        progressed = False
        # Namespaces a dispatch of this round took to their limit of running jobs.
        full: set[str] = set()
        for tier, entry in window:
            uid, namespace = entry.admitted.job.uid, entry.admitted.job.namespace
            if uid in plan.waiting or namespace in full:
                continue
            with job_context(uid):
                try:
                    step = await self._consider(tier, entry, fleet, plan.planned.get(uid))
                except Exception as error:  # noqa: BLE001 - one job never stops dispatch
                    step = await self._failed(tier, entry, error)
            if step is Step.DISPATCHED and self.shares.at_limit(namespace):
                full.add(namespace)
            progressed = progressed or step is not Step.WAITING
        return progressed

    def _ordered(self) -> list[tuple[Tier, Buffered]]:
        """The buffered entries in the order they are considered: by tier shares, then
        by tenant shares within a tier, without those of namespaces at their limit."""
        return self.shares.order(self.buffers)

    def _spent(self, tier: Tier, entry: Buffered) -> None:
        """Accounts one dispatched entry against its tier's and its namespace's share."""
        self.shares.spend(tier, entry)

    async def _consider(
        self, tier: Tier, entry: Buffered, fleet: list[WorkerView], planned: Planned | None
    ) -> Step:
        """Drops the entry if stale, dispatches it if its planned worker takes it, else
        leaves it waiting."""
        judged = await judge(self.rt, self.admitter, self.dispatched, entry)
        job, admission = judged.job, judged.admission
        if judged.verdict is Verdict.STALE:
            self.buffers.remove(tier, entry)
            await settle(entry.message)
            return Step.DROPPED
        if judged.verdict is Verdict.DEFER or job is None:
            return Step.WAITING
        if self.adoption.maybe_dispatched_before(entry, job):
            adopted = await self.adoption.adopt_if_running(entry, job, fleet, admission)
            if adopted is None:
                self._hold_again(admission)
                return Step.WAITING
            if adopted:
                self.buffers.remove(tier, entry)
                return Step.DISPATCHED
        placement = None
        if planned is not None:
            placement = await self._placement(job, tier, planned.worker_id)
        if placement is None:
            if admission is not None:
                self.admitter.show_queued([admission])  # it waits
            return Step.WAITING
        self.buffers.remove(tier, entry)
        await self._dispatch(entry, job, placement, admission, planned.keep_hot if planned else [])
        self._spent(tier, entry)
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
        self.buffers.remove(tier, entry)
        await settle(entry.message)
        return Step.DROPPED

    def _hold_again(self, admission: Admission | None) -> None:
        if admission is not None:
            self.rt.held.hold(admission)

    async def _placement(self, job: TrackedJob, tier: Tier, worker_id: str) -> Placement | None:
        """The job on its planned worker; None while a model (its namespace's safety model
        too) is not Ready or that worker cannot take it (gone, cordoned, full): the next
        round plans again; None too for a job whose style no longer applies (its preset
        deleted since admission, read again by an operator that restarted): it fails."""
        spec = await self.rt.styles.resolve(job)
        if isinstance(spec, StyleRefused):
            await lifecycle.finish(self.rt, job, JobPhase.FAILED, Reason.INVALID_SPEC, spec.message)
            return None
        policy = self.rt.policies.last_read(job.namespace)
        if policy is None:
            policy = await self.rt.policies.of(job.namespace)
        watermark = watermark_on(await self._namespace_annotations(job.namespace))
        models = resolve_job_models(
            self.rt.models,
            job.namespace,
            spec,
            self.rt.settings.system_namespace,
            policy.safety_model,
        )
        if isinstance(models, NotReady):
            return None
        needs = job_requirements(models, tier, spec.gpu_class)
        # The fleet as of now, not of the cycle's start: a worker the pool controller
        # cordoned during the awaits of this round (it is being removed) is never placed on.
        worker = [w for w in self.rt.fleet.snapshot() if w.worker_id == worker_id]
        decision = place(needs, worker, self.rt.pools)
        if decision.worker is None:
            return None
        return Placement(models, decision.worker, decision, watermark, spec)

    async def _namespace_annotations(self, namespace: str) -> dict[str, str]:
        """The namespace's annotations as the fair order keeps them (read again in the
        background when old), so that a dispatch waits on no read; read now if never read."""
        cached = self.rt.kube.cached_namespace_annotations(namespace)
        if cached is not None:
            return cached[1]
        return await self.rt.kube.namespace_annotations(namespace)

    async def _dispatch(
        self,
        entry: Buffered,
        job: TrackedJob,
        placement: Placement,
        admission: Admission | None,
        keep_hot: list[str],
    ) -> None:
        rt = self.rt
        models, worker = placement.models, placement.worker
        ref = entry.admitted.job
        refs = models.refs
        order = DispatchedJob(
            job=ref,
            spec=placement.spec,
            style=job.spec.style,
            seed=seed_of(job, admission),
            model=refs.model,
            loras=refs.loras,
            control_nets=refs.control_nets,
            control_types=models.control_types,
            detectors=refs.detectors,
            ip_adapters=refs.ip_adapters,
            image_encoder=refs.image_encoder,
            motion_adapter=refs.motion_adapter,
            background_remover=refs.background_remover,
            embeddings=refs.embeddings,
            vae=refs.vae,
            upscaler=refs.upscaler,
            restorer=refs.restorer,
            safety=refs.safety,
            watermark=placement.watermark,
            output_bucket=rt.settings.buckets.outputs,
            deadline=job.created + timedelta(seconds=job.spec.timeout_seconds),
            keep_hot=keep_hot,
        )
        with dispatch_span(entry, job, placement):
            # Assumed before the publish returns: a fast worker's report on the job may
            # come first, and it must find the job here (and free its slot), not the
            # other way.
            rt.fleet.assume(worker.worker_id, ref.uid, models.model.ref.digest, keep_hot)
            done = self.publisher.begin(ref.uid, ref.attempt)
            if not await self.publisher.publish(entry, order, worker):
                rt.fleet.forget(ref.uid)
                self.forget(ref.uid)
                self._hold_again(admission)
                self.publisher.settle(ref.uid, done)
                return
            metrics.PLACEMENTS.labels(placement.decision.outcome).inc()
            rt.autoscaler.trigger()
            await self.publisher.record_in_background(entry, job, worker, done, admission)


def dispatch_span(
    entry: Buffered, job: TrackedJob, placement: Placement
) -> AbstractContextManager[Span]:
    """The dispatch's span, in the job's trace: the one its admission message carries,
    else its annotation's (a message published by an operator without tracing)."""
    ref, worker = entry.admitted.job, placement.worker
    attributes: dict[str, str | int] = {
        **telemetry.job_attributes(ref.namespace, ref.name, ref.uid),
        telemetry.JOB_ATTEMPT: ref.attempt,
        telemetry.MODEL: job.spec.primary_model,
        telemetry.TIER: entry.admitted.tier.value,
        telemetry.POOL: worker.pool,
        telemetry.WORKER: worker.worker_id,
    }
    annotations = job.body["metadata"].get("annotations")
    parent = telemetry.context_from_headers(entry.message.headers)
    return telemetry.tracer.start_as_current_span(
        "dispatch",
        context=parent or telemetry.context_from_annotations(annotations),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    )


async def _first_of(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
