"""Adoption after a restart: a job that an earlier operator may have dispatched before it
died (its message was redelivered, or the job is older than this process) is first looked
for on the workers' Leases, and adopted where it already runs, so a restart never runs a
job twice at once."""

import logging
import time

from diffleet_core.logs import about_job
from diffleet_operator import status
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.queue.held import Admission
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.buffer import Buffered
from diffleet_operator.scheduler.publishing import Publisher

logger = logging.getLogger(__name__)


class Adoption:
    def __init__(self, rt: Runtime, publisher: Publisher) -> None:
        self.rt = rt
        self.publisher = publisher
        self._started = time.monotonic()
        self._started_at = status.now()

    def maybe_dispatched_before(self, entry: Buffered, job: TrackedJob) -> bool:
        """An earlier operator may have dispatched this job: its message was delivered
        before, or the job was created before this process started (admitted again)."""
        return bool(entry.message.redelivered) or job.created < self._started_at

    async def adopt_if_running(
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
        done = self.publisher.begin(job.uid, entry.admitted.job.attempt)
        await self.publisher.record(entry, job, holder, done, admission)
        logger.info(
            "adopted: already running on %s",
            holder.worker_id,
            extra=about_job(job.namespace, job.name, job.uid),
        )
        return True
