"""Turns a training's events into its status.

Events (started, checkpointed, stopped, succeeded, failed) come through the durable
training results queue, one at a time per training, and are acknowledged after the
status write that carries them; an event of an attempt that is not the running one is
dropped. A stopped training's slot is freed first, before any write: inference waits for
it. Progress comes through the progress exchange (routing keys training.*), written at
most once per `training_progress_interval_seconds` per training.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.broker import parse_or_reject, settle
from diffleet_core.messages import (
    TRAINING_EVENT,
    TrainingCheckpointed,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
    TrainingStopped,
    TrainingSucceeded,
)
from diffleet_core.queues import TRAINING_PROGRESS_KEYS
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.training_job import KIND, TrainedModel, TrainingPhase
from diffleet_operator import metrics
from diffleet_operator.quarantine import Loop, describe, dropped_message, transient
from diffleet_operator.training import status as patches
from diffleet_operator.training.records import TrackedTraining
from diffleet_operator.training.scheduler import TrainingScheduler

if TYPE_CHECKING:
    from diffleet_operator.runtime import Runtime

logger = logging.getLogger(__name__)

RESULTS_PREFETCH = 64
# An event that could not be applied (transient failure) goes back after this pause.
RETRY_PAUSE_SECONDS = 1.0

Build = Callable[[TrackedTraining], dict[str, Any]]
Event = (
    TrainingStarted | TrainingCheckpointed | TrainingStopped | TrainingSucceeded | TrainingFailed
)


class TrainingResults:
    def __init__(self, rt: "Runtime", scheduler: TrainingScheduler) -> None:
        self.rt = rt
        self.scheduler = scheduler
        self.trainings = rt.trainings
        self._last_progress: dict[str, float] = {}

    async def start(self) -> None:
        topology = self.rt.broker.topology
        await self.rt.broker.consume(
            topology.training_results_queue, self.on_event, RESULTS_PREFETCH
        )
        await self.rt.broker.subscribe(
            topology.progress_exchange, TRAINING_PROGRESS_KEYS, self.on_progress
        )

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        event = await parse_or_reject(message, TRAINING_EVENT)
        if event is None:
            dropped_message(Loop.RESULTS, self.rt.broker.topology.training_results_queue)
            return
        try:
            async with self.trainings.lock(event.job.uid):
                await self.apply(event)
        except Exception as error:  # noqa: BLE001 - one event never stops the results
            training = self.trainings.index.get(event.job.uid)
            body = training.body if training else _reference(event)
            self.rt.quarantine.resource_failed(Loop.RESULTS, body, error)
            if transient(error):
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                await settle(message, requeue=True)
                return
        await settle(message)

    async def apply(self, event: Event) -> None:
        ref = event.job
        training = await self.trainings.current(ref)
        if training is None or training.phase.finished:
            metrics.STALE_REPORTS.inc()
            return
        ends = isinstance(event, TrainingStopped | TrainingSucceeded | TrainingFailed)
        current = training.status.attempts == ref.attempt or self._ours(ref.uid, ref.attempt)
        waited = None
        if ends and current:
            self.rt.fleet.forget(ref.uid)  # first: inference may be waiting for the slot
            waited = self.scheduler.slot_freed(ref.uid)
            if waited is not None and isinstance(event, TrainingStopped):
                metrics.TRAINING_PREEMPTION_SECONDS.observe(waited)
        if isinstance(event, TrainingStarted):
            await self._write(
                training, event, lambda t: patches.started(t, event.step, event.at, event.worker)
            )
        elif isinstance(event, TrainingCheckpointed):
            steps = self._steps_run(ref.uid, training, event.steps_run)
            await self._write(
                training,
                event,
                lambda t: patches.checkpointed(
                    t, event.checkpoint, event.validation_images, steps, event.loss
                ),
            )
        elif isinstance(event, TrainingStopped):
            await self._stopped(training, event, for_inference=waited is not None)
        elif isinstance(event, TrainingSucceeded):
            await self._succeeded(training, event)
        else:
            await self._failed(training, event)

    async def _write(
        self, training: TrackedTraining, event: Event, build: Build
    ) -> TrackedTraining | None:
        attempt = event.job.attempt
        written = await self.trainings.write(
            training, lambda t: build(t) if t.running_as(attempt) else None
        )
        if written is None:
            metrics.STALE_REPORTS.inc()
        return written

    async def _stopped(
        self, training: TrackedTraining, event: TrainingStopped, *, for_inference: bool
    ) -> None:
        """Preempted (for inference, or by its worker's drain): queued again; else
        (a CancelJob) Cancelled."""
        steps = self._steps_run(training.uid, training, event.steps_run)
        if event.preempted and not training.spec.cancel:
            metrics.TRAINING_PREEMPTIONS.inc()
            why = "for inference" if for_inference else "by its worker (draining)"
            await self.trainings.requeue(
                training,
                event.job.attempt,
                Reason.PREEMPTED,
                f"preempted at step {event.step} {why}",
                preempted=True,
                checkpoint=event.checkpoint,
                steps_run=steps,
            )
            return
        await self.trainings.end(
            training,
            event.job.attempt,
            TrainingPhase.CANCELLED,
            Reason.CANCELLED,
            f"cancelled at step {event.step}",
            checkpoint=event.checkpoint,
        )

    async def _succeeded(self, training: TrackedTraining, event: TrainingSucceeded) -> None:
        if not training.running_as(event.job.attempt):
            metrics.STALE_REPORTS.inc()
            return
        output = TrainedModel(
            model=training.spec.output.name,
            uri=event.uri,
            digest=event.sha256,
            size_bytes=event.size_bytes,
        )
        await self.trainings.register(training, output)
        steps = self._steps_run(training.uid, training, event.steps_run)
        written = await self._write(
            training,
            event,
            lambda t: patches.registering(
                t, output, event.step, steps, event.loss, event.validation_images
            ),
        )
        self.trainings.steps_before.pop(training.uid, None)
        if written is not None:
            await self.trainings.complete_if_registered(written)

    async def _failed(self, training: TrackedTraining, event: TrainingFailed) -> None:
        steps = self._steps_run(training.uid, training, event.steps_run)
        if event.retryable:
            await self.trainings.requeue(
                training,
                event.job.attempt,
                event.reason,
                event.message or event.reason,
                preempted=False,
                steps_run=steps,
            )
            return
        await self.trainings.end(
            training, event.job.attempt, TrainingPhase.FAILED, event.reason, event.message
        )

    def _ours(self, uid: str, attempt: int) -> bool:
        dispatched = self.scheduler.dispatched.get(uid)
        return dispatched is not None and dispatched[0] == attempt

    def _steps_run(self, uid: str, training: TrackedTraining, this_attempt: int) -> int:
        """Steps run over every attempt: those before the running one (known at its
        dispatch; after a restart, what the status says less this attempt's)."""
        before = self.trainings.steps_before.get(uid)
        if before is None:
            before = max(training.status.steps_run - this_attempt, 0)
        return before + this_attempt

    async def on_progress(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        try:
            report = TrainingProgress.model_validate_json(message.body)
        except ValidationError:
            dropped_message(Loop.RESULTS, self.rt.broker.topology.progress_exchange)
            return
        uid = report.job.uid
        interval = self.rt.operator.training_progress_interval_seconds
        if time.monotonic() - self._last_progress.get(uid, 0.0) < interval:
            return
        training = self.trainings.index.get(uid)
        if training is None or not training.running_as(report.job.attempt):
            return
        self._last_progress[uid] = time.monotonic()
        steps = self._steps_run(uid, training, report.steps_run)
        try:
            async with self.trainings.lock(uid):
                await self.trainings.write(
                    training,
                    lambda t: (
                        patches.progress(report.step, steps, report.loss)
                        if t.running_as(report.job.attempt) and t.status.output is None
                        else None
                    ),
                )
        except Exception as error:  # noqa: BLE001 - progress is best effort
            logger.warning("training progress not written: %s", describe(error))


def _reference(event: Event) -> dict[str, object]:
    """A bare reference to the training an event names (for the quarantine's record)."""
    ref = event.job
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid},
    }
