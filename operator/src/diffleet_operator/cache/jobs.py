"""The operator's view of GenerationJobs, fed by kopf's watch (like an informer cache).

The dispatch loop reads it to drop stale queue messages without an API call, and the
housekeeping loop scans it for timeouts, TTLs and due requeues.
"""

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import kopf

from diffleet_core.resources.generation_job import GenerationJobSpec, GenerationJobStatus, JobPhase


@dataclass(frozen=True)
class TrackedJob:
    namespace: str
    name: str
    uid: str
    created: datetime
    spec: GenerationJobSpec
    status: GenerationJobStatus
    body: kopf.Body
    # When the watch delivered this state (time.monotonic()).
    seen_at: float

    @classmethod
    def from_body(cls, raw: dict[str, Any] | kopf.Body) -> "TrackedJob":
        body = raw if isinstance(raw, kopf.Body) else kopf.Body(cast(kopf.RawBody, raw))
        meta = body["metadata"]
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            created=datetime.fromisoformat(meta["creationTimestamp"]),
            spec=GenerationJobSpec.model_validate(body.get("spec", {})),
            status=GenerationJobStatus.model_validate(body.get("status") or {}),
            body=body,
            seen_at=time.monotonic(),
        )

    @property
    def phase(self) -> JobPhase:
        return self.status.phase or JobPhase.PENDING

    @property
    def active(self) -> bool:
        return not self.phase.finished and not self.spec.cancel

    @property
    def deleting(self) -> bool:
        return self.body["metadata"].get("deletionTimestamp") is not None

    @property
    def generation(self) -> int | None:
        generation = self.body["metadata"].get("generation")
        return int(generation) if generation is not None else None


class JobCache:
    def __init__(self) -> None:
        self._jobs: dict[str, TrackedJob] = {}
        # Uids whose status is Queued, kept as the watch goes so that the autoscaler need not
        # scan every job each round.
        self._queued: set[str] = set()

    def observe(self, body: dict[str, Any] | kopf.Body) -> TrackedJob:
        job = TrackedJob.from_body(body)
        self._jobs[job.uid] = job
        if job.phase is JobPhase.QUEUED and job.active:
            self._queued.add(job.uid)
        else:
            self._queued.discard(job.uid)
        return job

    def remove(self, uid: str) -> None:
        self._jobs.pop(uid, None)
        self._queued.discard(uid)

    def get(self, uid: str) -> TrackedJob | None:
        return self._jobs.get(uid)

    def all(self) -> list[TrackedJob]:
        return list(self._jobs.values())

    def queued(self) -> list[TrackedJob]:
        """Jobs whose status is Queued: in a tier queue (buffered by the dispatcher or beyond
        its prefetch window) or waiting out a requeue's backoff."""
        return [self._jobs[uid] for uid in self._queued]


def behind(job: TrackedJob, attempt: int) -> bool:
    """The job's status has not yet caught up with this attempt's admission."""
    return job.status.attempts < attempt or (
        job.status.attempts == attempt and job.phase is JobPhase.PENDING
    )
