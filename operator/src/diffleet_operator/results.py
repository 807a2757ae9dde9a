"""Turns the workers' reports into job status.

Results (started, succeeded, failed) come through a durable queue and are acknowledged
only after the status write that carries them: a job's reports within the status
writer's window go in one write (diffleet_operator.status_writer), so none is lost while
the operator is down. A report that cannot be parsed is dropped; one whose handling fails
transiently goes back to its queue after a pause; any other failure quarantines its job
(diffleet_operator.quarantine) and the report is acknowledged. Progress comes through the
transient progress exchange and is written, at most once per job per
`progress_interval_seconds`, only for jobs that ask for it (annotation
`diffleet.io/progress: status`).
"""

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from diffleet_core.broker import parse_or_reject, settle
from diffleet_core.logs import about_job, job_context
from diffleet_core.messages import (
    RESULT_EVENT,
    JobFailed,
    JobProgress,
    JobRef,
    JobStarted,
    JobSucceeded,
)
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import (
    PROGRESS_ANNOTATION,
    PROGRESS_IN_STATUS,
    JobPhase,
)
from diffleet_operator import lifecycle, metrics, status
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.quarantine import Loop, describe, dropped_message, transient
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

# A result that could not be applied (transient failure) goes back to its queue after
# this pause.
RETRY_PAUSE_SECONDS = 1.0
# Reports handled at once. Each waits for its status write, up to the status writer's
# window: 100 jobs/s, two reports each, in a 0.5 s window keep about 100 in hand.
RESULTS_PREFETCH = 512


class Results:
    def __init__(self, rt: Runtime, dispatcher: Dispatcher) -> None:
        self.rt = rt
        self.dispatcher = dispatcher
        self._last_progress: dict[str, float] = {}
        # One report at a time per job, in delivery order (asyncio.Lock is FIFO).
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def start(self) -> None:
        await self.rt.broker.consume(
            self.rt.broker.topology.results_queue, self.on_result, RESULTS_PREFETCH
        )
        await self.rt.broker.subscribe(
            self.rt.broker.topology.progress_exchange, "#", self.on_progress
        )

    async def on_result(self, message: AbstractIncomingMessage) -> None:
        event = await parse_or_reject(message, RESULT_EVENT)
        if event is None:
            dropped_message(Loop.RESULTS, self.rt.broker.topology.results_queue)
            return
        with job_context(event.job.uid):
            try:
                async with self._locks[event.job.uid]:
                    recorded = await self.apply(event)
                if recorded is not None:
                    await recorded  # outside the lock: the job's next report may join it
                self.rt.autoscaler.observe(event)
            except Exception as error:  # noqa: BLE001 - one report never stops the results
                cached = self.rt.jobs.get(event.job.uid)
                await self.rt.quarantine.job_of_message(
                    Loop.RESULTS, event.job, cached.body if cached else None, error
                )
                if transient(error):
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
                    await settle(message, requeue=True)
                    return
        await settle(message)

    async def apply(self, event: JobStarted | JobSucceeded | JobFailed) -> Awaitable[None] | None:
        """Submits the report's status write; what it returns, if anything, is done once
        that write is recorded (a requeue or failure is written before it returns)."""
        # A worker may report before this process's Scheduled is submitted; read before it,
        # the status would lack the attempt, and a requeue would reuse its number and be lost.
        await self.dispatcher.scheduled(event.job.uid)
        if isinstance(event, JobFailed):
            # A requeue numbers its attempt from the stored one: what is submitted first.
            await self.rt.statuses.flush(event.job.uid)
        # A final report rewrites the conditions list: it is computed from a fresh read
        # (a pending batch's conditions merge with it by type).
        job = await self._current(event.job, fresh=not isinstance(event, JobStarted))
        if job is None:
            metrics.STALE_REPORTS.inc()
            return None
        if isinstance(event, JobStarted):
            if job.phase not in (JobPhase.PENDING, JobPhase.QUEUED, JobPhase.SCHEDULED):
                return None
            patch = status.running(event.at) | {
                "worker": event.worker,
                "attempts": event.job.attempt,
            }
            return self._submit(job, patch, JobPhase.RUNNING, Reason.STARTED)
        self.dispatcher.forget(job.uid)
        self._last_progress.pop(job.uid, None)
        self._locks.pop(job.uid, None)
        if isinstance(event, JobSucceeded):
            patch = status.succeeded(
                job.status,
                job.generation,
                outputs=event.outputs,
                model_digest=event.model_digest,
                lora_digests=event.lora_digests,
                total_steps=self.rt.styles.spec(job).steps,
                completed_at=event.at,
            )
            self.rt.fleet.forget(job.uid)
            return self._submit(job, patch, JobPhase.SUCCEEDED, Reason.SUCCEEDED)
        if event.retryable:
            await lifecycle.requeue(self.rt, job, event.reason, event.message)
        else:
            await lifecycle.finish(self.rt, job, JobPhase.FAILED, event.reason, event.message)
        return None

    def _submit(
        self, job: TrackedJob, patch: dict[str, Any], phase: JobPhase, reason: Reason
    ) -> Awaitable[None]:
        written = self.rt.statuses.submit(job.namespace, job.name, job.uid, patch)
        return self._recorded(job, written, phase, reason)

    async def _recorded(
        self, job: TrackedJob, written: Awaitable[bool], phase: JobPhase, reason: Reason
    ) -> None:
        if not await written:
            metrics.STALE_REPORTS.inc()  # the job moved on first (finished, requeued)
            return
        metrics.TRANSITIONS.labels(phase).inc()
        self.rt.kube.tally_event(job.body, reason)

    async def on_progress(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        try:
            report = JobProgress.model_validate_json(message.body)
        except ValidationError:
            dropped_message(Loop.RESULTS, self.rt.broker.topology.progress_exchange)
            return
        last = self._last_progress.get(report.job.uid, 0.0)
        if report.step >= report.total_steps:
            return  # the Succeeded patch writes the final progress
        if time.monotonic() - last < self.rt.operator.progress_interval_seconds:
            return
        job = self.rt.jobs.get(report.job.uid)
        if job is None or job.status.attempts != report.job.attempt or job.phase.finished:
            return
        if not progress_in_status(job):
            return
        self._last_progress[report.job.uid] = time.monotonic()
        async with self._locks[report.job.uid]:
            current = self.rt.jobs.get(report.job.uid)
            if current is None or current.phase.finished:
                return
            written = self.rt.statuses.submit(
                job.namespace, job.name, job.uid, status.progress(report.step, report.total_steps)
            )
        try:
            await written
        except Exception as error:  # noqa: BLE001 - progress is best effort
            logger.warning(
                "progress not written: %s",
                describe(error),
                extra=about_job(job.namespace, job.name, job.uid),
            )

    async def _current(self, ref: JobRef, *, fresh: bool) -> TrackedJob | None:
        """The job if this report is about its current, unfinished attempt."""
        job = self.rt.jobs.get(ref.uid)
        # Dispatched by this process: the watch may not show it Scheduled yet.
        ours = self.dispatcher.dispatched.get(ref.uid) == ref.attempt
        if fresh or job is None or (job.status.attempts < ref.attempt and not ours):
            body = await self.rt.kube.get_job(ref.namespace, ref.name)
            if body is None or body["metadata"]["uid"] != ref.uid:
                return None
            job = self.rt.jobs.observe(body)
        if job.phase.finished or not (ours or _about_current_attempt(job, ref.attempt)):
            return None
        return job


def progress_in_status(job: TrackedJob) -> bool:
    """Whether the job asks for its progress in its status (annotation)."""
    annotations = job.body["metadata"].get("annotations") or {}
    return bool(annotations.get(PROGRESS_ANNOTATION) == PROGRESS_IN_STATUS)


def _about_current_attempt(job: TrackedJob, attempt: int) -> bool:
    """A report is about the job's current attempt; a first attempt's report may come
    before any status says so: an operator that died between dispatching the job and
    writing Queued and Scheduled together (diffleet_operator.queue.held) left it Pending."""
    return job.status.attempts == attempt or (attempt == 1 and job.status.attempts == 0)
