"""Publishing a dispatch and recording it: the order goes to the worker's queue with
confirm; then Scheduled is written on the job (with Queued, when its admission was still
held: diffleet_operator.queue.held), and only then is the admission message acknowledged.
A failed write is tried again with backoff while the message stays unacknowledged."""

import asyncio
import logging
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

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

# Status writes of dispatched jobs in flight at once.
WRITES_IN_FLIGHT = 16
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
        self._writers = asyncio.Semaphore(WRITES_IN_FLIGHT)
        self._writing: set[asyncio.Task[None]] = set()

    def begin(self, uid: str, attempt: int) -> asyncio.Event:
        """Marks the attempt dispatched; the event is set once its Scheduled is written."""
        self.dispatched[uid] = attempt
        done = self._scheduling[uid] = asyncio.Event()
        return done

    def forget(self, uid: str) -> None:
        self.dispatched.pop(uid, None)

    def settle(self, uid: str, done: asyncio.Event) -> None:
        done.set()
        self._scheduling.pop(uid, None)

    async def scheduled(self, uid: str, within: float = 10.0) -> None:
        """Waits until a dispatch of `uid` in progress has written Scheduled, so a worker's
        fast "started" is never overwritten by it."""
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
        """The status write runs beside the loop (bounded), so the next placement need not
        wait for the API server; every report of a worker waits for it (`scheduled`)."""
        await self._writers.acquire()
        task = asyncio.create_task(self._record(entry, job, worker, done, admission))
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
        await self._writers.acquire()
        await self._record(entry, job, worker, done, admission)

    async def _record(
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
        and its "started" report sets the status. Holds one of `_writers`."""
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
            self.settle(job.uid, done)
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
