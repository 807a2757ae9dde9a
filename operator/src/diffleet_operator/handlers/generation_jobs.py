"""GenerationJob handlers: track, admit and cancel from the watch; cancel-before-delete
through kopf's finalizer.

Admission and cancellation run from the raw watch (`kopf.on.event`), not from kopf's
change-detecting handlers, so kopf keeps no diff base or progress annotations on a job
(diffleet_operator.main.configure): its only write on a job is the finalizer.
"""

from typing import Any

import kopf

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import generation_job
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobPhase
from diffleet_operator import lifecycle
from diffleet_operator.quarantine import Loop
from diffleet_operator.queue.admitter import Admitter
from diffleet_operator.runtime import Runtime

RESOURCE = (API_GROUP, API_VERSION, generation_job.PLURAL)


@kopf.on.event(*RESOURCE)
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keeps the job cache in step with the API server; admits new jobs and cancels the
    ones whose spec.cancel became true. kopf runs this one event at a time per job."""
    rt, admitter = Runtime.of(memo), Admitter.of(memo)
    uid = body["metadata"]["uid"]
    if event["type"] == "DELETED":
        rt.jobs.remove(uid)
        admitter.forget(uid)
        rt.quarantine.forget(uid)
        rt.styles.forget(uid)
        return
    try:
        job = rt.jobs.observe(body)
    except ValueError as error:  # pydantic's ValidationError included
        # A job the operator cannot read is kept out of every loop's cache.
        rt.jobs.remove(uid)
        await rt.quarantine.job(Loop.ADMISSION, body, error)
        return
    try:
        if lifecycle.cancel_requested(job):
            await lifecycle.cancel(rt, job)
        else:
            await admitter.on_change(job)
    except Exception as error:  # noqa: BLE001 - one job never stops the watch
        await rt.quarantine.job_failed(Loop.ADMISSION, body, error)


@kopf.on.delete(*RESOURCE)
async def cancel_before_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Deleting a job cancels it first (kopf holds a finalizer until this returns)."""
    rt = Runtime.of(memo)
    job = rt.jobs.observe(body)
    if not job.phase.finished:
        await lifecycle.stop(rt, job, JobPhase.CANCELLED, Reason.CANCELLED, "deleted")
