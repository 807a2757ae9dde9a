"""The worker service: takes jobs from the worker's own queue and runs them.

Protocol (diffleet_core.messages): for each DispatchedJob it publishes JobStarted, then
JobProgress per step (transient), then JobSucceeded or JobFailed to the durable results
queue, and acknowledges the dispatch only after the result is confirmed, so a worker
that dies mid-job leaves its message for redelivery and its Lease to expire. Cancel
orders arrive on the control exchange (routing key = worker id) and stop a job within
one step; a job cancelled before it starts is never run. Warm orders arrive there too:
the model is loaded into the hot tier beside (not during) the jobs, one order at a time
per model, none while draining. The queue carries trainings too (DispatchedTraining, run
by training_service.py, their events on the durable training results queue); a training
takes a slot as a job does, and PreemptTraining orders on the control exchange stop it.

Up to `concurrency` jobs run at once (the queue's prefetch window; each delivery is
handled in a task of its own). No job order stops the loop: one that does not parse,
or whose run raises an error the runner did not foresee, is reported failed when it
names its job (else dropped), counted in diffleet_worker_jobs_quarantined_total and
logged once; a result that cannot be published is handed back once, then dropped.

A RabbitMQ restart loses no result and runs no job twice: the connection is robust (it
reconnects and re-declares the consumers), a publish that meets the outage is tried
again with jittered backoff for up to `broker_patience_seconds`, and an order whose
result was published here (job uid and attempt, the idempotency key) is acknowledged
without running when the broker redelivers it because the first ack was lost with the
old channel. The operator drops reports about an attempt already finished.
"""

import asyncio
import json
import logging
import random
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from enum import StrEnum

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from opentelemetry.trace import Span, SpanKind, StatusCode
from pydantic import TypeAdapter, ValidationError

from diffleet_core import telemetry
from diffleet_core.broker import Broker
from diffleet_core.fleet import WorkerInventory
from diffleet_core.logs import job_context
from diffleet_core.messages import (
    CONTROL_ORDER,
    CancelJob,
    DispatchedJob,
    DispatchedTraining,
    JobFailed,
    JobProgress,
    JobRef,
    JobStarted,
    JobSucceeded,
    ModelRef,
    PreemptTraining,
    TrainingFailed,
    TrainingStopped,
    TrainingSucceeded,
    WarmModel,
    WorkerEvent,
)
from diffleet_core.resources.conditions import Reason
from diffleet_worker import metrics
from diffleet_worker.cancels import PendingCancels
from diffleet_worker.config import WorkerSettings
from diffleet_worker.runner import JobCancelledError, RunFailedError, Runner, Trainer
from diffleet_worker.training_service import TrainingFinal, TrainingOrders

logger = logging.getLogger(__name__)
DISPATCHED_JOB = TypeAdapter(DispatchedJob)
DISPATCHED_TRAINING = TypeAdapter(DispatchedTraining)
# Cancel orders remembered for jobs not here yet (see PendingCancels), and attempts
# reported here whose redelivery is dropped (the same bounded memory).
PENDING_CANCELS = 1024
REPORTED_ATTEMPTS = 1024
# Publishes retried while RabbitMQ is away: first and largest pause.
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 4.0
# What a publish or an ack raises while the connection is down or being restored.
BROKER_AWAY = (*CONNECTION_EXCEPTIONS, TimeoutError)


class Quarantine(StrEnum):
    """Why a job order was set aside (the reason label of the quarantine metric)."""

    UNREADABLE = "unreadable"
    UNEXPECTED = "unexpected"
    UNREPORTABLE = "unreportable"


TRAINING_FINALS = (TrainingSucceeded, TrainingStopped, TrainingFailed)


def now() -> datetime:
    return datetime.now(UTC)


class WorkerService:
    def __init__(
        self,
        settings: WorkerSettings,
        broker: Broker,
        runner: Runner,
        trainer: Trainer | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.runner = runner
        # None: a worker that only generates (its training orders are reported failed).
        self.trainings = None if trainer is None else TrainingOrders(settings, broker, trainer)
        self.running: dict[str, asyncio.Event] = {}
        self.steps: dict[str, int] = {}  # last step reported, by job uid
        self.cancels = PendingCancels(PENDING_CANCELS)
        self.reported = PendingCancels(REPORTED_ATTEMPTS)  # "uid/attempt" keys
        self.warming: dict[str, asyncio.Task[None]] = {}  # by model digest
        self.draining = False
        self.jobs: set[asyncio.Task[None]] = set()  # referenced while they run
        self.idle = asyncio.Event()
        self.idle.set()

    def inventory(self) -> WorkerInventory:
        s = self.settings
        return WorkerInventory(
            worker_id=s.worker_id,
            pool=s.pool,
            gpu_type=s.gpu_type,
            node=s.node,
            vram_gib=s.vram_gib,
            concurrency=s.concurrency,
            hot_models=self.runner.hot_models(),
            warm_models=self.runner.warm_models(),
            hot_slots=self.runner.hot_slots(),
            jobs_in_flight=list(self.running),
            draining=self.draining,
        )

    async def start(self) -> None:
        topology = self.broker.topology
        await self.broker.declare_worker_queue(self.settings.worker_id)
        await self.broker.declare_queue(topology.training_results_queue)
        await self.broker.subscribe(
            topology.control_exchange, self.settings.worker_id, self.on_control
        )
        await self.broker.consume(
            topology.worker_queue(self.settings.worker_id),
            self.on_dispatch,
            prefetch=self.settings.concurrency,
        )

    async def on_control(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        try:
            order = CONTROL_ORDER.validate_json(message.body)
        except ValidationError:
            logger.warning("control: unreadable order dropped")
            return
        if isinstance(order, WarmModel):
            self.warm(order.model)
        elif isinstance(order, CancelJob):
            self.cancel(order)
        elif isinstance(order, PreemptTraining) and self.trainings is not None:
            self.trainings.preempt(order)

    def warm(self, model: ModelRef) -> None:
        """Loads `model` into the hot tier in the background, unless it is there, being
        loaded already, or the worker is draining."""
        if self.draining or model.digest in self.warming:
            return
        if model.digest in self.runner.hot_models():
            return
        task = asyncio.create_task(self._warm(model))
        self.warming[model.digest] = task
        task.add_done_callback(lambda _: self.warming.pop(model.digest, None))

    async def _warm(self, model: ModelRef) -> None:
        logger.info("warming model %s/%s (%s)", model.namespace, model.name, model.digest[:12])
        try:
            await self.runner.warm(model)
        except RunFailedError as error:
            logger.warning("model %s not warmed: %s: %s", model.name, error.reason, error)
        except Exception:
            logger.exception("model %s not warmed", model.name)

    def cancel(self, order: CancelJob) -> None:
        uid = order.job.uid
        if self.trainings is not None and self.trainings.cancel(uid):
            logger.info("training %s: cancel received", uid)
        if event := self.running.get(uid):
            logger.info("job %s: cancel received at step %d", uid, self.steps.get(uid, 0))
            event.set()
        else:
            self.cancels.add(uid)

    async def on_dispatch(self, message: AbstractIncomingMessage) -> None:
        """Handles a job order in a task of its own, shielded: aio_pika cancels the
        consumer's callbacks when their channel dies with the connection, and a
        RabbitMQ outage must not stop a job midway."""
        job = asyncio.create_task(self._dispatch(message))
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)
        await asyncio.shield(job)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        # Parsed as the kind it names, so that a refusal lists that kind's problems only.
        order: DispatchedJob | DispatchedTraining
        try:
            if names_training(message.body):
                order = DISPATCHED_TRAINING.validate_json(message.body)
            else:
                order = DISPATCHED_JOB.validate_json(message.body)
        except ValidationError as error:
            await self._refuse(message, error)
            return
        with job_context(order.job.uid):
            await self._handle(message, order)

    async def _handle(
        self, message: AbstractIncomingMessage, order: DispatchedJob | DispatchedTraining
    ) -> None:
        if self.draining:
            await message.nack(requeue=True)
            return
        uid = order.job.uid
        attempt = f"{uid}/{order.job.attempt}"
        # A second delivery of an order running or reported here is a duplicate.
        if uid in self.running or self.reported.take(attempt):
            await message.ack()
            return
        if isinstance(order, DispatchedJob) and (self.cancels.take(uid) or order.deadline < now()):
            await message.ack()
            return
        cancelled = asyncio.Event()
        self.running[uid] = cancelled
        self.idle.clear()
        try:
            if isinstance(order, DispatchedTraining):
                await self._run_training(message, order, cancelled)
            else:
                await self._run_job(message, order, cancelled)
        except Exception:
            again = bool(message.redelivered)
            outcome = " again; its order is dropped" if again else "; handing it back once"
            logger.exception("job %s: could not report its result%s", uid, outcome)
            await self._hand_back(message, again)
        else:
            self.reported.add(attempt)
            try:
                await message.ack()
            except BROKER_AWAY as error:
                # The delivery died with its channel: the broker redelivers the order,
                # which `reported` then drops.
                logger.warning("job %s: reported, ack lost with the channel: %r", uid, error)
        finally:
            del self.running[uid]
            self.steps.pop(uid, None)
            if not self.running:
                self.idle.set()

    async def _run_job(
        self, message: AbstractIncomingMessage, order: DispatchedJob, cancelled: asyncio.Event
    ) -> None:
        with job_span(message, order, self.settings.worker_id) as span:
            # Inside the span: the line carries the job's trace id.
            logger.info("running job %s attempt %d", order.job.uid, order.job.attempt)
            result = await self._run(order, cancelled)
            if isinstance(result, JobFailed):
                span.set_status(StatusCode.ERROR, f"{result.reason}: {result.message}")
            if result is not None:
                await self._report_end(result)

    async def _run_training(
        self, message: AbstractIncomingMessage, order: DispatchedTraining, cancelled: asyncio.Event
    ) -> None:
        with job_span(message, order, self.settings.worker_id, "run training") as span:
            final = await self._train(order, cancelled)
            if isinstance(final, TrainingFailed):
                span.set_status(StatusCode.ERROR, f"{final.reason}: {final.message}")
            await self._report_end(final)

    async def _train(self, order: DispatchedTraining, cancelled: asyncio.Event) -> TrainingFinal:
        """The training's final event; its earlier ones are published as they happen."""
        if self.trainings is None:
            return TrainingFailed(
                job=order.job,
                worker=self.settings.worker_id,
                at=now(),
                reason=Reason.INVALID_SPEC,
                message=f"worker {self.settings.worker_id} does not train",
            )
        stopped = self.trainings.stopped_before_start(order, self.cancels.take(order.job.uid))
        if stopped is not None:
            return stopped
        logger.info("running training %s attempt %d", order.job.uid, order.job.attempt)
        queue = self.broker.topology.training_results_queue
        return await self.trainings.run(
            order, cancelled, lambda event, key: self._publish_result(event, key, queue)
        )

    async def _refuse(self, message: AbstractIncomingMessage, error: ValidationError) -> None:
        """An order that does not parse: failed (InvalidSpec) when it names its job, else
        dropped; never redelivered."""
        metrics.JOBS_QUARANTINED.labels(Quarantine.UNREADABLE).inc()
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors(include_url=False)[:5]
        )
        job = named_job(message.body)
        if job is None:
            logger.error("dropping an unreadable job order naming no job: %s", problems)
            await message.reject(requeue=False)
            return
        logger.error("job %s: unreadable order, reported failed: %s", job.uid, problems)
        kind = TrainingFailed if names_training(message.body) else JobFailed
        failed = kind(
            job=job,
            worker=self.settings.worker_id,
            at=now(),
            reason=Reason.INVALID_SPEC,
            message=f"the worker could not read its order: {problems}",
        )
        try:
            await self._report_end(failed)
        except Exception:
            logger.exception("job %s: could not report its unreadable order; dropped", job.uid)
            await message.reject(requeue=False)
            return
        await message.ack()

    @staticmethod
    async def _hand_back(message: AbstractIncomingMessage, again: bool) -> None:
        """The order of a run whose result could not be published: requeued once (the
        broker may have blipped), dropped when that was its second delivery. When the
        channel itself is gone, the broker requeues the order by itself."""
        try:
            if not again:
                await message.nack(requeue=True)
                return
            metrics.JOBS_QUARANTINED.labels(Quarantine.UNREPORTABLE).inc()
            await message.reject(requeue=False)
        except BROKER_AWAY as error:
            logger.warning("order not handed back, its channel is gone: %r", error)

    async def _report_end(self, result: WorkerEvent) -> None:
        job = result.job
        topology = self.broker.topology
        training = isinstance(result, TRAINING_FINALS)
        queue = topology.training_results_queue if training else topology.results_queue
        await self._publish_result(result, f"{job.uid}/{job.attempt}/end", queue)

    async def _publish_result(self, event: WorkerEvent, message_id: str, queue: str) -> None:
        """Publishes to a results queue, confirmed, retrying while RabbitMQ is away for
        up to `broker_patience_seconds`; the last error is raised past that."""
        deadline = time.monotonic() + self.settings.broker_patience_seconds
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                # Bounded here: a robust channel waits for its connection without one.
                await asyncio.wait_for(
                    self.broker.publish_to_queue(queue, event, message_id),
                    self.settings.request_timeout_seconds,
                )
                return
            except BROKER_AWAY as error:
                pause = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not a secret
                if time.monotonic() + pause > deadline:
                    raise
                logger.warning("%s not published: %r; retrying in %.1fs", message_id, error, pause)
                await asyncio.sleep(pause)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _run(self, order: DispatchedJob, cancelled: asyncio.Event) -> WorkerEvent | None:
        worker = self.settings.worker_id
        started = JobStarted(job=order.job, worker=worker, at=now())
        started_id = f"{order.job.uid}/{order.job.attempt}/start"
        await self._publish_result(started, started_id, self.broker.topology.results_queue)

        async def on_step(step: int, total: int, eta: float | None, preview: str | None) -> None:
            self.steps[order.job.uid] = step
            report = JobProgress(
                job=order.job,
                step=step,
                total_steps=total,
                eta_seconds=eta,
                preview_png_base64=preview,
            )
            # Progress is transient: a report that meets an outage is skipped, not waited for.
            if not self.broker.connected:
                logger.warning("job %s: step %d not reported: RabbitMQ away", order.job.uid, step)
                return
            try:
                await asyncio.wait_for(
                    self.broker.publish_to_exchange(
                        self.broker.topology.progress_exchange, order.job.uid, report
                    ),
                    self.settings.request_timeout_seconds,
                )
            except BROKER_AWAY as error:
                logger.warning("job %s: step %d not reported: %r", order.job.uid, step, error)

        try:
            outcome = await self.runner.run(order, cancelled, on_step)
        except JobCancelledError:
            uid = order.job.uid
            logger.info("job %s: cancelled, last step %d", uid, self.steps.get(uid, 0))
            return None
        except RunFailedError as failure:
            return JobFailed(
                job=order.job,
                worker=worker,
                at=now(),
                reason=failure.reason,
                message=str(failure),
                retryable=failure.retryable,
            )
        except Exception as error:
            metrics.JOBS_QUARANTINED.labels(Quarantine.UNEXPECTED).inc()
            logger.exception("job %s failed unexpectedly", order.job.uid)
            return JobFailed(
                job=order.job,
                worker=worker,
                at=now(),
                reason=Reason.FAILED,
                message=f"{type(error).__name__}: {error}",
            )
        return JobSucceeded(
            job=order.job,
            worker=worker,
            at=now(),
            outputs=outcome.outputs,
            model_digest=outcome.model_digest,
            lora_digests=outcome.lora_digests,
        )

    async def drain(self, grace_seconds: float) -> None:
        """Stops taking work and waits for the jobs in flight, at most `grace_seconds`.
        Jobs still running then are stopped; the caller then deletes the worker's Lease,
        and the operator requeues them (as it does for a lost worker). Trainings stop at
        their next step boundary at once, with a checkpoint, reported preempted."""
        self.draining = True
        if self.trainings is not None:
            self.trainings.drain()
        try:
            await asyncio.wait_for(self.idle.wait(), timeout=grace_seconds)
        except TimeoutError:
            for event in self.running.values():
                event.set()


def job_span(
    message: AbstractIncomingMessage,
    order: DispatchedJob | DispatchedTraining,
    worker: str,
    name: str = "run job",
) -> AbstractContextManager[Span]:
    """The run's span, in the job's trace (the dispatch's, from the order's headers); the
    runner's stage spans (fetch, load, denoise, encode, upload) are its children."""
    job = order.job
    attributes: dict[str, str | int] = {
        **telemetry.job_attributes(job.namespace, job.name, job.uid),
        telemetry.JOB_ATTEMPT: job.attempt,
        telemetry.MODEL: order.model.name,
        telemetry.WORKER: worker,
    }
    return telemetry.tracer.start_as_current_span(
        name,
        context=telemetry.context_from_headers(message.headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def names_training(body: bytes) -> bool:
    """Whether an unreadable order says it is a training's (its `order` field)."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("order") == "training"


def named_job(body: bytes) -> JobRef | None:
    """The job an unreadable order names (its `job` field), if that much parses."""
    try:
        document = json.loads(body)
        return JobRef.model_validate(document["job"]) if isinstance(document, dict) else None
    except (ValueError, KeyError, ValidationError):
        return None
