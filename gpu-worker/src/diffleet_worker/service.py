"""The worker service: takes jobs from the worker's own queue and runs them.

Protocol (diffleet_core.messages): for each DispatchedJob it publishes JobStarted, then
JobProgress per step (transient), then JobSucceeded or JobFailed to the durable results
queue, and acknowledges the dispatch only after the result is confirmed, so a worker
that dies mid-job leaves its message for redelivery and its Lease to expire. Cancel
orders arrive on the control exchange (routing key = worker id) and stop a job within
one step; a job cancelled before it starts is never run. Warm orders arrive there too:
the model is loaded into the hot tier beside (not during) the jobs, one order at a time
per model, none while draining.
"""

import asyncio
import logging
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pydantic import TypeAdapter, ValidationError

from diffleet_core.broker import Broker, parse_or_reject
from diffleet_core.fleet import WorkerInventory
from diffleet_core.messages import (
    CONTROL_ORDER,
    CancelJob,
    DispatchedJob,
    JobFailed,
    JobProgress,
    JobStarted,
    JobSucceeded,
    ModelRef,
    WarmModel,
    WorkerEvent,
)
from diffleet_core.resources.conditions import Reason
from diffleet_worker.config import WorkerSettings
from diffleet_worker.runner import JobCancelledError, RunFailedError, Runner

logger = logging.getLogger(__name__)
DISPATCHED_JOB = TypeAdapter(DispatchedJob)


def now() -> datetime:
    return datetime.now(UTC)


class WorkerService:
    def __init__(self, settings: WorkerSettings, broker: Broker, runner: Runner) -> None:
        self.settings = settings
        self.broker = broker
        self.runner = runner
        self.running: dict[str, asyncio.Event] = {}
        self.steps: dict[str, int] = {}  # last step reported, by job uid
        self.cancelled: set[str] = set()
        self.warming: dict[str, asyncio.Task[None]] = {}  # by model digest
        self.draining = False
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
            jobs_in_flight=list(self.running),
            draining=self.draining,
        )

    async def start(self) -> None:
        topology = self.broker.topology
        await self.broker.declare_worker_queue(self.settings.worker_id)
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
        else:
            self.cancel(order)

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
        self.cancelled.add(uid)
        if event := self.running.get(uid):
            logger.info("job %s: cancel received at step %d", uid, self.steps.get(uid, 0))
            event.set()

    async def on_dispatch(self, message: AbstractIncomingMessage) -> None:
        order = await parse_or_reject(message, DISPATCHED_JOB)
        if order is None:
            return
        if self.draining:
            await message.nack(requeue=True)
            return
        uid = order.job.uid
        if uid in self.cancelled or order.deadline < now():
            await message.ack()
            return
        cancelled = asyncio.Event()
        self.running[uid] = cancelled
        logger.info("running job %s attempt %d", uid, order.job.attempt)
        self.idle.clear()
        try:
            result = await self._run(order, cancelled)
            if result is not None:
                await self.broker.publish_to_queue(
                    self.broker.topology.results_queue, result, f"{uid}/{order.job.attempt}/end"
                )
            await message.ack()
        except Exception:
            logger.exception("job %s: could not report; handing it back", uid)
            await message.nack(requeue=True)
        finally:
            del self.running[uid]
            self.steps.pop(uid, None)
            if not self.running:
                self.idle.set()

    async def _run(self, order: DispatchedJob, cancelled: asyncio.Event) -> WorkerEvent | None:
        worker = self.settings.worker_id
        started = JobStarted(job=order.job, worker=worker, at=now())
        await self.broker.publish_to_queue(
            self.broker.topology.results_queue,
            started,
            f"{order.job.uid}/{order.job.attempt}/start",
        )

        async def on_step(step: int, total: int, eta: float | None, preview: str | None) -> None:
            self.steps[order.job.uid] = step
            report = JobProgress(
                job=order.job,
                step=step,
                total_steps=total,
                eta_seconds=eta,
                preview_png_base64=preview,
            )
            await self.broker.publish_to_exchange(
                self.broker.topology.progress_exchange, order.job.uid, report
            )

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
            logger.exception("job %s failed", order.job.uid)
            return JobFailed(
                job=order.job, worker=worker, at=now(), reason=Reason.FAILED, message=str(error)
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
        and the operator requeues them (as it does for a lost worker)."""
        self.draining = True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout=grace_seconds)
        except TimeoutError:
            for event in self.running.values():
                event.set()
