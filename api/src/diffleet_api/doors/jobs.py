"""What every door does with a job: tags it with the door and the caller, waits for it to
finish (bounded), reads its images back, and finds the caller's unfinished jobs."""

import asyncio
import hashlib
import logging

from aiohttp import ClientError

from diffleet_api.deps import Principal
from diffleet_api.errors import NotFoundError
from diffleet_api.history import find_job, public_job
from diffleet_api.kube import CALLER_LABEL, DOOR_LABEL, END_USER_ANNOTATION, Body, JobTags
from diffleet_api.objects import s3_call
from diffleet_api.outputs import output_locations
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic

logger = logging.getLogger(__name__)

WATCH_SECONDS = 60
# A watch that failed (the API server restarting, say) is opened again after this long,
# doubling up to the cap, until the wait's own deadline.
REWATCH_SECONDS = 0.5
REWATCH_MAX_SECONDS = 5.0
# The caller's unfinished jobs a door looks through (progress, interrupt).
CALLER_JOBS_LIMIT = 100


class StillRunningError(Exception):
    """The job did not finish within the door's wait; the client follows it by its id."""

    def __init__(self, job: JobPublic) -> None:
        super().__init__(f"job {job.id!r} has not finished")
        self.job = job


def caller_label(principal: Principal) -> str:
    """The caller as a label value: a digest of its subject (an API key's id or a JWT's
    `sub`, which may hold characters a label may not)."""
    return hashlib.sha256(principal.subject.encode()).hexdigest()[:32]


def door_tags(door: str, principal: Principal, end_user: str | None = None) -> JobTags:
    annotations = {END_USER_ANNOTATION: end_user} if end_user else {}
    return JobTags(
        labels={DOOR_LABEL: door, CALLER_LABEL: caller_label(principal)},
        annotations=annotations,
    )


async def finished(runtime: Runtime, principal: Principal, job: JobPublic) -> JobPublic:
    """The job once it has finished (Succeeded, Failed or Cancelled), from a watch on it;
    raises StillRunningError past `door_wait_seconds`."""
    try:
        async with asyncio.timeout(runtime.settings.door_wait_seconds):
            return await _until_finished(runtime, principal, job)
    except TimeoutError:
        raise StillRunningError(job) from None


async def _until_finished(runtime: Runtime, principal: Principal, job: JobPublic) -> JobPublic:
    backoff = REWATCH_SECONDS
    while True:
        body = await runtime.kube.get_job(job.namespace, job.id)
        if body is None:  # deleted: by its TTL, the history has it
            recorded = await find_job(runtime, principal.tenant, job.id)
            if recorded is None or recorded.uid != job.uid:
                raise NotFoundError(f"job {job.id!r} was deleted before it finished")
            return recorded
        current = public_job(body)
        if current.status.phase is not None and current.status.phase.finished:
            return current
        try:
            seen = await _watch(runtime, body)
        except (ClientError, TimeoutError, OSError) as error:
            logger.info("the watch of job %s failed, opening it again: %r", job.id, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, REWATCH_MAX_SECONDS)
            continue
        if seen is not None:
            return seen
        backoff = REWATCH_SECONDS


async def _watch(runtime: Runtime, body: Body) -> JobPublic | None:
    """The job when a watch from `body`'s version shows it finished; None when the watch
    ends first (deleted, expired, or the server's timeout): the caller reads it again."""
    meta = body["metadata"]
    async for kind, event in runtime.kube.job_events(
        meta["namespace"],
        meta["resourceVersion"],
        WATCH_SECONDS,
        field_selector=f"metadata.name={meta['name']}",
    ):
        if kind in ("BOOKMARK", "ERROR", "DELETED"):
            if kind != "BOOKMARK":
                return None
            continue
        job = public_job(event)
        if job.status.phase is not None and job.status.phase.finished:
            return job
    return None


async def output_images(runtime: Runtime, job: JobPublic) -> list[bytes]:
    """The bytes of the Succeeded job's outputs, in order, from the outputs bucket."""
    found = []
    for location in output_locations(runtime, job):
        answer = await s3_call(
            f"read {location.key}",
            runtime.s3.get_object,
            Bucket=location.bucket,
            Key=location.key,
        )
        found.append(await asyncio.to_thread(answer["Body"].read))
    return found


async def callers_jobs(runtime: Runtime, principal: Principal, door: str) -> list[JobPublic]:
    """The caller's unfinished jobs that came through `door`, newest first."""
    selector = f"{DOOR_LABEL}={door},{CALLER_LABEL}={caller_label(principal)}"
    page = await runtime.kube.list_jobs(
        principal.tenant.namespace, CALLER_JOBS_LIMIT, None, label_selector=selector
    )
    jobs = [public_job(body) for body in page.items]
    unfinished = [job for job in jobs if job.status.phase is None or not job.status.phase.finished]
    return sorted(unfinished, key=lambda job: job.created_at, reverse=True)
