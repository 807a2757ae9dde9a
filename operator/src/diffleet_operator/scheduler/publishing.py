"""Publishing a dispatch and recording it: the order goes to the worker's queue with
confirm; then Scheduled is written on the job (with Queued, when its admission was still
held: diffleet_operator.queue.held) through the status writer, which may carry the
worker's first reports in the same write (diffleet_operator.status_writer), and only then
is the admission message acknowledged. A failed write is tried again with backoff while
the message stays unacknowledged."""

import asyncio
import logging
from typing import Any

from diffleet_core.broker import settle
from diffleet_core.logs import about_job
from diffleet_core.messages import DispatchedJob
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobPhase
from diffleet_operator import metrics, status
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.quarantine import Loop, describe, transient
from diffleet_operator.queue.held import Admission
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.buffer import Buffered

logger = logging.getLogger(__name__)

# A Scheduled write that failed transiently is tried again after these pauses (doubling).
WRITE_RETRY_FIRST_SECONDS = 0.5
WRITE_RETRY_MAX_SECONDS = 8.0


class Publisher:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # uid -> the attempt last dispatched (or adopted) by this operator.
        self.dispatched: dict[str, int] = {}
        self._scheduling: dict[str, asyncio.Event] = {}
        self._declared: set[str] = set()
        self._writing: set[asyncio.Task[None]] = set()

    def begin(self, uid: str, attempt: int) -> asyncio.Event:
        """Marks the attempt dispatched; the event is set once its Scheduled is submitted
        to the status writer."""
        self.dispatched[uid] = attempt
        done = self._scheduling[uid] = asyncio.Event()
        return done

    def forget(self, uid: str) -> None:
        self.dispatched.pop(uid, None)

    def settle(self, uid: str, done: asyncio.Event) -> None:
        done.set()
        self._scheduling.pop(uid, None)

    async def scheduled(self, uid: str, within: float = 10.0) -> None:
        """Waits until a dispatch of `uid` in progress has submitted Scheduled, so a
        worker's fast "started" follows it (in the same write, or a later one)."""
        if event := self._scheduling.get(uid):
            await asyncio.wait_for(event.wait(), timeout=within)

    async def publish(self, entry: Buffered, order: DispatchedJob, worker: WorkerView) -> bool:
        """Publishes the dispatch with confirm; on failure the admission goes back."""
        ref = entry.admitted.job
        queue = self.rt.broker.topology.worker_queue(worker.worker_id)
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

    async def record_in_background(
        self,
        entry: Buffered,
        job: TrackedJob,
        worker: WorkerView,
        done: asyncio.Event,
        admission: Admission | None,
    ) -> None:
        """Submits Scheduled now (every report of a worker waits for that: `scheduled`)
        and waits for its write beside the loop, so the next placement need not."""
        patch, written = self._submit(job, worker, done, admission)
        task = asyncio.create_task(self._record(entry, job, patch, written, admission))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def record(
        self,
        entry: Buffered,
        job: TrackedJob,
        worker: WorkerView,
        done: asyncio.Event,
        admission: Admission | None,
    ) -> None:
        patch, written = self._submit(job, worker, done, admission)
        await self._record(entry, job, patch, written, admission)

    def _submit(
        self, job: TrackedJob, worker: WorkerView, done: asyncio.Event, admission: Admission | None
    ) -> tuple[dict[str, Any], "asyncio.Future[bool]"]:
        where = {"pool": worker.pool, "node": worker.node, "worker": worker.worker_id}
        if admission is None:
            patch = status.scheduled(job.status, job.generation, **where)
        else:
            patch = status.admitted_and_scheduled(job.status, job.generation, admission, **where)
        written = self.rt.statuses.submit(job.namespace, job.name, job.uid, patch)
        self.settle(job.uid, done)
        return patch, written

    async def _record(
        self,
        entry: Buffered,
        job: TrackedJob,
        patch: dict[str, Any],
        written: "asyncio.Future[bool]",
        admission: Admission | None,
    ) -> None:
        """Waits for Scheduled (and Queued, from its held admission) to be written, then
        acks its admission message: never before, so an operator that dies meanwhile
        leaves the message to its successor, which adopts the job where it runs. A write
        that the API server refuses for good quarantines the job; the worker has it
        anyway, and its "started" report sets the status."""
        try:
            if await self._write_scheduled(job, patch, written):
                if admission is not None:
                    metrics.TRANSITIONS.labels(JobPhase.QUEUED).inc()
                metrics.TRANSITIONS.labels(JobPhase.SCHEDULED).inc()
                metrics.DISPATCH_SECONDS.observe((status.now() - job.created).total_seconds())
                self.rt.kube.tally_event(job.body, Reason.DISPATCHED)
        except Exception as error:  # noqa: BLE001 - refused for good: quarantined
            await self.rt.quarantine.job(Loop.DISPATCH, job.body, error)
        finally:
            await settle(entry.message)

    async def _write_scheduled(
        self, job: TrackedJob, patch: dict[str, Any], written: "asyncio.Future[bool]"
    ) -> bool:
        """The outcome of the submitted write; a transient failure submits the patch again
        after a pause (doubling up to `WRITE_RETRY_MAX_SECONDS`) while the job still waits
        for it. False when the job is gone or has moved on without it (a worker's report
        wrote Running or later)."""
        delay = WRITE_RETRY_FIRST_SECONDS
        while True:
            try:
                return await written
            except Exception as error:
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
            written = self.rt.statuses.submit(job.namespace, job.name, job.uid, patch)
