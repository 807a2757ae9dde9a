"""Training orders in the worker (issue 20): a DispatchedTraining run by the Trainer,
its events on the durable training results queue, its loss on the progress exchange.

Protocol (diffleet_core.messages): TrainingStarted (the step resumed from) first, then
TrainingCheckpointed as each checkpoint is saved, then one final event: TrainingSucceeded,
TrainingStopped or TrainingFailed. The service acknowledges the order after the final
event is confirmed, as for jobs. TrainingProgress (routing key training.<uid>) carries
the mean loss of the steps since the last report, at most every
`training_progress_seconds`; it is transient, skipped while RabbitMQ is away.

A training stops at the next step boundary, saving a checkpoint there: preempted (a
PreemptTraining for its attempt, or the worker draining: the operator requeues it and
it resumes from that checkpoint) or cancelled (a CancelJob for its uid; a cancel wins
over a preemption). An order whose stop arrived before it did is not run: it is
reported stopped at once.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from statistics import fmean

from diffleet_core.broker import Broker
from diffleet_core.datasets import DatasetRefusedError
from diffleet_core.messages import (
    DispatchedTraining,
    PreemptTraining,
    TrainingCheckpointed,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
    TrainingStopped,
    TrainingSucceeded,
    WorkerEvent,
)
from diffleet_core.queues import training_progress_key
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.training_job import TrainingCheckpoint, ValidationImage
from diffleet_worker import metrics
from diffleet_worker.cancels import PendingCancels
from diffleet_worker.config import WorkerSettings
from diffleet_worker.runner import RunFailedError, Trainer, TrainingHooks, TrainingOutcome

logger = logging.getLogger(__name__)

TrainingFinal = TrainingSucceeded | TrainingStopped | TrainingFailed
# Publishes one durable event (confirmed) with its message id.
Publish = Callable[[WorkerEvent, str], Awaitable[None]]
# Preempt orders remembered for trainings not here yet, as cancels are (PendingCancels).
PENDING_PREEMPTS = 1024


class StopReason(StrEnum):
    PREEMPT = "preempt"
    CANCEL = "cancel"


def now() -> datetime:
    return datetime.now(UTC)


class EventLine:
    """A training's durable events, published one at a time in the order posted (from
    the trainer's thread or the loop). `close` waits for those posted and raises the
    first publish error: the order is then handed back, as a job's is."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[WorkerEvent, str]] = asyncio.Queue()
        self._error: Exception | None = None
        self._task = asyncio.create_task(self._publish_all())

    def post(self, event: WorkerEvent, message_id: str) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (event, message_id))

    async def close(self) -> None:
        await self._queue.join()
        self._task.cancel()
        if self._error is not None:
            raise self._error

    async def _publish_all(self) -> None:
        while True:
            event, message_id = await self._queue.get()
            try:
                if self._error is None:
                    await self._publish(event, message_id)
            except Exception as error:  # noqa: BLE001 - raised by close, in the order's task
                self._error = error
            finally:
                self._queue.task_done()


class TrainingRun:
    """One training running here: why it stops, its events, its progress window."""

    def __init__(
        self,
        order: DispatchedTraining,
        settings: WorkerSettings,
        broker: Broker,
        events: EventLine,
        cancelled: asyncio.Event,
    ) -> None:
        self.order = order
        self.settings = settings
        self.broker = broker
        self.events = events
        self.cancelled = cancelled
        self.reason: StopReason | None = None
        self.steps_run = 0
        self.started = time.monotonic()
        self.reported = self.started
        self.window: list[float] = []  # losses since the last progress report
        self.since_checkpoint: list[float] = []  # losses since the last checkpoint
        self.last_loss: float | None = None
        self.progress: set[asyncio.Task[None]] = set()  # referenced while they run
        self._loop = asyncio.get_running_loop()

    @property
    def key(self) -> str:
        return f"{self.order.job.uid}/{self.order.job.attempt}"

    def stop(self, reason: StopReason) -> None:
        """Stops the run at the next step boundary; a cancel wins over a preemption."""
        if self.reason is None or reason is StopReason.CANCEL:
            self.reason = reason

    @property
    def preempted(self) -> bool:
        """Stopped for the operator to requeue: not a cancel (a drain past its grace
        sets the cancel event too, and is a preemption)."""
        return self.reason is not StopReason.CANCEL

    def hooks(self) -> TrainingHooks:
        return TrainingHooks(
            should_stop=self.should_stop,
            on_start=self.on_start,
            on_progress=self.on_progress,
            on_checkpoint=self.on_checkpoint,
        )

    def should_stop(self) -> bool:
        return self.reason is not None or self.cancelled.is_set()

    def on_start(self, step: int, examples: int) -> None:
        logger.info("training %s: from step %d, %d examples", self.key, step, examples)
        # The steps' clock: the ETA leaves the model's load and the dataset's read out.
        self.started = self.reported = time.monotonic()
        started = TrainingStarted(
            job=self.order.job, worker=self.worker, at=now(), step=step, examples=examples
        )
        self.events.post(started, f"{self.key}/start")

    def on_progress(self, step: int, loss: float) -> None:
        self.steps_run += 1
        self.last_loss = loss
        self.window.append(loss)
        self.since_checkpoint.append(loss)
        metrics.TRAINING_STEPS.inc()
        clock = time.monotonic()
        if clock - self.reported < self.settings.training_progress_seconds:
            return
        total = self.order.spec.steps
        report = TrainingProgress(
            job=self.order.job,
            step=step,
            total_steps=total,
            loss=fmean(self.window),
            steps_run=self.steps_run,
            eta_seconds=(total - step) * (clock - self.started) / self.steps_run,
        )
        self.window, self.reported = [], clock
        self._loop.call_soon_threadsafe(self._send_progress, report)

    def on_checkpoint(self, checkpoint: TrainingCheckpoint, images: list[ValidationImage]) -> None:
        event = TrainingCheckpointed(
            job=self.order.job,
            worker=self.worker,
            at=now(),
            checkpoint=checkpoint,
            validation_images=images,
            steps_run=self.steps_run,
            loss=self.recent_loss(),
        )
        self.since_checkpoint = []
        self.events.post(event, f"{self.key}/checkpoint/{checkpoint.step}")

    def recent_loss(self) -> float | None:
        """The mean loss since the last checkpoint (the last step's when none since)."""
        return fmean(self.since_checkpoint) if self.since_checkpoint else self.last_loss

    @property
    def worker(self) -> str:
        return self.settings.worker_id

    def _send_progress(self, report: TrainingProgress) -> None:
        if not self.broker.connected:
            return  # transient: skipped while RabbitMQ is away, not waited for
        task = asyncio.create_task(self._publish_progress(report))
        self.progress.add(task)
        task.add_done_callback(self.progress.discard)

    async def _publish_progress(self, report: TrainingProgress) -> None:
        try:
            await asyncio.wait_for(
                self.broker.publish_to_exchange(
                    self.broker.topology.progress_exchange,
                    training_progress_key(self.order.job.uid),
                    report,
                ),
                self.settings.request_timeout_seconds,
            )
        except Exception as error:  # noqa: BLE001 - progress is transient
            logger.warning("training %s: step %d not reported: %r", self.key, report.step, error)

    def final(self, outcome: TrainingOutcome) -> TrainingFinal:
        job, worker = self.order.job, self.worker
        if outcome.finished:
            assert outcome.lora is not None, "a finished training wrote its LoRA"
            return TrainingSucceeded(
                job=job,
                worker=worker,
                at=now(),
                step=outcome.step,
                steps_run=outcome.steps_run,
                loss=self.recent_loss(),
                uri=outcome.lora.uri,
                sha256=outcome.lora.sha256,
                size_bytes=outcome.lora.size_bytes,
                validation_images=outcome.validation_images,
            )
        return TrainingStopped(
            job=job,
            worker=worker,
            at=now(),
            preempted=self.preempted,
            step=outcome.step,
            steps_run=outcome.steps_run,
            checkpoint=outcome.checkpoint,
        )

    def failed(self, reason: str, message: str, *, retryable: bool) -> TrainingFailed:
        return TrainingFailed(
            job=self.order.job,
            worker=self.worker,
            at=now(),
            reason=reason,
            message=message,
            retryable=retryable,
            steps_run=self.steps_run,
        )


class TrainingOrders:
    """The trainings running on this worker, by uid; the service owns their slots."""

    def __init__(self, settings: WorkerSettings, broker: Broker, trainer: Trainer) -> None:
        self.settings = settings
        self.broker = broker
        self.trainer = trainer
        self.runs: dict[str, TrainingRun] = {}
        self.preempts = PendingCancels(PENDING_PREEMPTS)  # "uid/attempt" keys

    def preempt(self, order: PreemptTraining) -> None:
        run = self.runs.get(order.job.uid)
        if run is not None and run.order.job.attempt == order.job.attempt:
            logger.info("training %s: preempted at step boundary %d", run.key, run.steps_run)
            run.stop(StopReason.PREEMPT)
        else:
            self.preempts.add(f"{order.job.uid}/{order.job.attempt}")

    def cancel(self, uid: str) -> bool:
        """Cancels the training `uid` when it runs here; False when it does not."""
        run = self.runs.get(uid)
        if run is None:
            return False
        run.stop(StopReason.CANCEL)
        return True

    def drain(self) -> None:
        """The worker is stopping: every training stops at its next step boundary, with
        a checkpoint, for the operator to resume it elsewhere."""
        for run in self.runs.values():
            run.stop(StopReason.PREEMPT)

    def stopped_before_start(
        self, order: DispatchedTraining, cancelled: bool
    ) -> TrainingStopped | None:
        """The report of an order whose cancel or preemption came first, None when it is
        to run."""
        preempted = self.preempts.take(f"{order.job.uid}/{order.job.attempt}")
        if not (cancelled or preempted):
            return None
        return TrainingStopped(
            job=order.job,
            worker=self.settings.worker_id,
            at=now(),
            preempted=not cancelled,
            step=0,
            steps_run=0,
        )

    async def run(
        self, order: DispatchedTraining, cancelled: asyncio.Event, publish: Publish
    ) -> TrainingFinal:
        """Runs the order; its events are published as they happen, the final one is
        returned for the service to publish before it acknowledges the order."""
        events = EventLine(publish)
        run = TrainingRun(order, self.settings, self.broker, events, cancelled)
        self.runs[order.job.uid] = run
        try:
            final = await self._outcome(run)
        finally:
            del self.runs[order.job.uid]
            await events.close()
        metrics.TRAININGS.labels(final.event.removeprefix("training-")).inc()
        return final

    async def _outcome(self, run: TrainingRun) -> TrainingFinal:
        try:
            outcome = await self.trainer.train(run.order, run.hooks())
        except DatasetRefusedError as refused:
            logger.warning("training %s: dataset refused: %s", run.key, refused)
            return run.failed(refused.reason, refused.message, retryable=False)
        except RunFailedError as failure:
            logger.warning("training %s failed: %s: %s", run.key, failure.reason, failure)
            return run.failed(failure.reason, str(failure), retryable=failure.retryable)
        except Exception as error:
            logger.exception("training %s failed unexpectedly", run.key)
            message = f"{type(error).__name__}: {error}"
            return run.failed(Reason.FAILED, message, retryable=True)
        if outcome.steps_run:
            logger.info(
                "training %s: %s at step %d, %d steps, %.3f CPU s/step",
                run.key,
                "finished" if outcome.finished else f"stopped ({run.reason})",
                outcome.step,
                outcome.steps_run,
                outcome.cpu_seconds / outcome.steps_run,
            )
        return run.final(outcome)
