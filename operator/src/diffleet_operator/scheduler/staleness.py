"""Whether a buffered admission is still worth dispatching: its job may have been
cancelled, finished or deleted, the message may be an older attempt's or one already
dispatched, or the job's status may not have caught up with the admission yet."""

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, auto

from diffleet_core.messages import JobRef
from diffleet_core.resources.generation_job import JobPhase
from diffleet_operator import status
from diffleet_operator.cache.jobs import TrackedJob, behind
from diffleet_operator.queue.admitter import Admitter
from diffleet_operator.queue.held import Admission
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.buffer import Buffered

# How long a message may wait for its job's status to catch up before it is re-read.
CATCH_UP = timedelta(seconds=30)


class Verdict(Enum):
    DISPATCH = auto()
    DEFER = auto()
    STALE = auto()


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    job: TrackedJob | None = None
    # The job's held admission, claimed: whoever dispatches the job writes it.
    admission: Admission | None = None


async def judge(
    rt: Runtime, admitter: Admitter, dispatched: dict[str, int], entry: Buffered
) -> Judgement:
    """`dispatched`: uid -> the attempt this operator last dispatched."""
    ref = entry.admitted.job
    job = rt.jobs.get(ref.uid)
    held, coming = queued_here(rt, admitter, ref)
    caught_up = status.now() - entry.admitted.admitted_at > CATCH_UP
    if job is None or (caught_up and not coming and behind(job, ref.attempt)):
        body = await rt.kube.get_job(ref.namespace, ref.name)
        if body is None or body["metadata"]["uid"] != ref.uid:
            return Judgement(Verdict.STALE)
        job = rt.jobs.observe(body)
        held, coming = queued_here(rt, admitter, ref)
        if not coming and behind(job, ref.attempt):
            return Judgement(Verdict.STALE)
    if not job.active or dispatched.get(ref.uid, 0) >= ref.attempt:
        return Judgement(Verdict.STALE)
    if ref.attempt < job.status.attempts:
        return Judgement(Verdict.STALE)
    if held:
        # Pending on the API server, Queued here: this attempt's admission is held.
        return Judgement(Verdict.DISPATCH, job, rt.held.claim(ref.uid, ref.attempt))
    if behind(job, ref.attempt):
        return Judgement(Verdict.DEFER, job)
    if job.phase is not JobPhase.QUEUED:
        return Judgement(Verdict.STALE)
    return Judgement(Verdict.DISPATCH, job)


def queued_here(rt: Runtime, admitter: Admitter, ref: JobRef) -> tuple[bool, bool]:
    """Whether this attempt's admission is held here, and whether its Queued status is
    held here or on its way to the API server (then Pending there is not stale)."""
    held = rt.held.holds(ref.uid, ref.attempt)
    return held, held or admitter.writing_queued(ref.uid)
