"""The training scheduler: trainings run below every inference tier.

The durable training queue is consumed into a buffer (unacknowledged until dispatched or
stale, as the tier buffers are). A cycle, every `training_schedule_interval_seconds` or
when woken:

1. a running training whose worker left the fleet (Lease expired or deleted) is queued
   again (WorkerLost), resuming from its last checkpoint;
2. inference jobs waiting in the dispatcher's tier buffers that no free slot takes preempt
   the trainings on workers they may run on (training.preemption): PreemptTraining to
   their worker, which checkpoints at its next step boundary; its TrainingStopped frees
   the slot (training.results);
3. the buffered trainings, in arrival order, are placed on a worker with a free slot that
   no waiting inference job may run on, by the placement of inference (pool, gpuClass,
   the base model's VRAM, the base model hot first): DispatchedTraining to the worker's
   queue (confirmed), the slot assumed, status Running with the attempt.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractIncomingMessage
from pydantic import TypeAdapter

from diffleet_core.broker import parse_or_reject, settle
from diffleet_core.messages import (
    AdmittedTraining,
    CancelJob,
    DispatchedTraining,
    PreemptTraining,
)
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.training_job import TrainingPhase
from diffleet_operator import metrics
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.quarantine import Loop, dropped_message, transient
from diffleet_operator.queue.admission import NotReady, resolve_model
from diffleet_operator.scheduler.eligibility import Requirements, requirements
from diffleet_operator.scheduler.needs import waiting_job_needs
from diffleet_operator.scheduler.placement import place
from diffleet_operator.training import status as patches
from diffleet_operator.training.preemption import (
    RunningTraining,
    to_preempt,
    wanted_by_inference,
)
from diffleet_operator.training.records import TrackedTraining
from diffleet_operator.training.service import Trainings

if TYPE_CHECKING:
    from diffleet_operator.runtime import Runtime
    from diffleet_operator.scheduler.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

ADMITTED_TRAINING = TypeAdapter(AdmittedTraining)
# Writing Running after the order is published is tried this often, this far apart.
RECORD_TRIES = 5
RECORD_PAUSE_SECONDS = 1.0


@dataclass
class Entry:
    message: AbstractIncomingMessage
    admitted: AdmittedTraining


class TrainingScheduler:
    def __init__(self, rt: "Runtime", dispatcher: "Dispatcher") -> None:
        self.rt = rt
        self.dispatcher = dispatcher
        self.trainings: Trainings = rt.trainings
        self.buffer: list[Entry] = []
        # uid -> (attempt, time.monotonic()) of the attempts this operator dispatched.
        self.dispatched: dict[str, tuple[int, float]] = {}
        # uid -> when its PreemptTraining was sent (time.monotonic()).
        self.preempting: dict[str, float] = {}
        self._started = time.monotonic()

    async def start(self) -> None:
        await self.rt.broker.consume(
            self.rt.broker.topology.training_queue,
            self._receive,
            self.rt.operator.training_prefetch,
        )

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        admitted = await parse_or_reject(message, ADMITTED_TRAINING)
        if admitted is None:
            dropped_message(Loop.DISPATCH, self.rt.broker.topology.training_queue)
            return
        self.buffer.append(Entry(message, admitted))
        self.trainings.wake.set()
        self.rt.autoscaler.trigger()

    async def run(self) -> None:
        interval = self.rt.operator.training_schedule_interval_seconds
        while True:
            self.trainings.wake.clear()
            try:
                await self.cycle()
            except Exception:
                logger.exception("training scheduling cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.trainings.wake.wait(), timeout=interval)

    async def cycle(self) -> None:
        await self.recover_lost()
        if self.rt.dispatch_pause.paused:
            return
        waiting = self.inference_waiting()
        if waiting:
            await self.preempt(self.rt.fleet.snapshot(), waiting)
        for entry in list(self.buffer):
            if not any(worker.free_slots for worker in self.rt.fleet.snapshot()):
                return
            await self.consider(entry, waiting)

    def inference_waiting(self) -> list[Requirements]:
        """What each inference job buffered for dispatch and still waiting needs, highest
        tier first; a job waiting for one of its models to be Ready is left out."""
        waiting = []
        for tier, entries in self.dispatcher.buffers.by_tier.items():
            for entry in entries:
                job = self.rt.jobs.get(entry.admitted.job.uid)
                if job is None or job.phase.finished:
                    continue
                needs = waiting_job_needs(self.rt, job, tier)
                if needs is not None:
                    waiting.append(needs)
        return waiting

    # Preemption

    async def preempt(self, fleet: list[WorkerView], waiting: list[Requirements]) -> None:
        running = [
            RunningTraining(
                uid=t.uid,
                worker=t.status.worker or "",
                attempt=t.status.attempts,
                since=self._since(t),
            )
            for t in self.trainings.index.all()
            if t.phase is TrainingPhase.RUNNING
            and t.status.worker
            and t.status.output is None
            and not t.spec.cancel
        ]
        live = {training.uid for training in running}
        self.preempting = {uid: at for uid, at in self.preempting.items() if uid in live}
        chosen = to_preempt(running, self.preempting.keys(), waiting, fleet, self.rt.pools)
        for training in chosen:
            tracked = self.trainings.index.get(training.uid)
            if tracked is None:
                continue
            order = PreemptTraining(job=tracked.ref(training.attempt))
            topology = self.rt.broker.topology
            await self.rt.broker.publish_to_exchange(
                topology.control_exchange, training.worker, order
            )
            self.preempting[training.uid] = time.monotonic()
            logger.info("preempting training %s on %s", tracked.name, training.worker)

    def slot_freed(self, uid: str) -> float | None:
        """The training's slot is free again; seconds since its PreemptTraining, if any."""
        self.dispatched.pop(uid, None)
        sent = self.preempting.pop(uid, None)
        self.trainings.wake.set()
        return None if sent is None else time.monotonic() - sent

    def _since(self, training: TrackedTraining) -> float:
        dispatched = self.dispatched.get(training.uid)
        return dispatched[1] if dispatched and dispatched[0] == training.status.attempts else 0.0

    # Lost workers

    async def recover_lost(self) -> None:
        """Running trainings whose worker is no longer in the fleet (its Lease expired or
        was deleted) are queued again; not in the first moments after start-up, while the
        Leases are being listed."""
        if time.monotonic() - self._started < self.rt.operator.training_startup_grace_seconds:
            return
        live = {worker.worker_id for worker in self.rt.fleet.snapshot()}
        lost = {
            t.status.worker
            for t in self.trainings.index.all()
            if t.phase is TrainingPhase.RUNNING
            and t.status.worker
            and t.status.worker not in live
            and t.status.output is None
        }
        for worker in sorted(w for w in lost if w):
            await self.trainings.worker_lost(worker)

    # Dispatch

    async def consider(self, entry: Entry, waiting: list[Requirements]) -> None:
        """Drops the entry if stale, dispatches it if a worker takes it, else leaves it."""
        ref = entry.admitted.job
        try:
            training = await self._current(entry)
            if training is None:
                self._drop(entry)
                await settle(entry.message)
                return
            if not training.queued_as(ref.attempt):
                return  # the watch has not shown it Queued yet
            await self.dispatch(entry, training, waiting)
        except Exception as error:  # noqa: BLE001 - one training never stops scheduling
            tracked = self.trainings.index.get(ref.uid)
            if tracked is not None:
                self.rt.quarantine.resource_failed(Loop.DISPATCH, tracked.body, error)
            if not transient(error):
                self._drop(entry)
                await settle(entry.message)

    async def _current(self, entry: Entry) -> TrackedTraining | None:
        """The training, None when the message is stale: the training is gone, finished,
        cancelled, or past that attempt."""
        ref = entry.admitted.job
        training = await self.trainings.current(ref)
        if training is None:
            return None
        stale = (
            training.phase.finished
            or training.spec.cancel
            or training.deleting
            or training.status.attempts + 1 > ref.attempt
        )
        return None if stale else training

    async def dispatch(
        self, entry: Entry, training: TrackedTraining, waiting: list[Requirements]
    ) -> None:
        rt = self.rt
        ref = entry.admitted.job
        base = resolve_model(
            rt.models, training.namespace, training.spec.base_model, rt.settings.system_namespace
        )
        if isinstance(base, NotReady):
            return  # its base model is back to not Ready: it waits for it
        needs = requirements(base, None, training.spec.gpu_class)
        fleet = rt.fleet.snapshot()
        wanted = wanted_by_inference(waiting, fleet, rt.pools)
        decision = place(needs, [w for w in fleet if w.worker_id not in wanted], rt.pools)
        if decision.worker is None:
            return
        worker = decision.worker
        seed = training.status.seed if training.status.seed is not None else 0
        order = DispatchedTraining(
            job=ref,
            spec=training.spec,
            seed=seed,
            model=base.ref,
            output_bucket=rt.settings.buckets.outputs,
            models_bucket=rt.settings.buckets.models,
        )
        async with self.trainings.lock(ref.uid):
            # Assumed before the publish: a fast worker's report must find the slot taken.
            rt.fleet.assume(worker.worker_id, ref.uid, base.ref.digest)
            try:
                await rt.broker.declare_worker_queue(worker.worker_id)
                await rt.broker.publish_to_queue(
                    rt.broker.topology.worker_queue(worker.worker_id),
                    order,
                    f"{ref.uid}/{ref.attempt}",
                )
            except Exception:
                rt.fleet.forget(ref.uid)
                raise
            self._drop(entry)
            self.dispatched[ref.uid] = (ref.attempt, time.monotonic())
            self.trainings.steps_before[ref.uid] = training.status.steps_run
            written = await self._record_running(training, worker, ref.attempt)
        await settle(entry.message)
        metrics.TRAININGS_DISPATCHED.inc()
        metrics.PLACEMENTS.labels(decision.outcome).inc()
        rt.autoscaler.trigger()
        if written is None:
            # Cancelled or deleted while being dispatched: the worker is told to stop.
            rt.fleet.forget(ref.uid)
            self.dispatched.pop(ref.uid, None)
            stop = CancelJob(job=ref, reason=Reason.CANCELLED)
            await rt.broker.publish_to_exchange(
                rt.broker.topology.control_exchange, worker.worker_id, stop
            )

    async def _record_running(
        self, training: TrackedTraining, worker: WorkerView, attempt: int
    ) -> TrackedTraining | None:
        """Writes Running once the order is published; the worker runs it from now on, so
        a transient failure is tried again (RECORD_TRIES times, a second apart): its
        reports are dropped until the status names this attempt."""
        for tries in range(1, RECORD_TRIES + 1):
            try:
                return await self.trainings.write(
                    training,
                    lambda t: (
                        patches.running(t, worker.worker_id, worker.pool, attempt)
                        if t.queued_as(attempt)
                        else None
                    ),
                )
            except Exception as error:
                if not transient(error) or tries == RECORD_TRIES:
                    raise
                await asyncio.sleep(RECORD_PAUSE_SECONDS)
        return None

    def _drop(self, entry: Entry) -> None:
        if entry in self.buffer:
            self.buffer.remove(entry)
