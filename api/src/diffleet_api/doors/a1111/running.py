"""The caller's running door jobs: A1111's progress (steps, and the latest live preview
heard on the progress exchange) and interrupt."""

import asyncio
import logging
from functools import partial

from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError

from diffleet_api import events
from diffleet_api.deps import Principal
from diffleet_api.doors.a1111 import DOOR
from diffleet_api.doors.a1111.answers import job_timestamp
from diffleet_api.doors.a1111.schemas import A1111Progress, A1111ProgressState
from diffleet_api.doors.jobs import callers_jobs
from diffleet_api.runtime import Runtime
from diffleet_core.resources.generation_job import JobPhase

logger = logging.getLogger(__name__)

# How long GET progress listens on the progress exchange for a live preview of the
# caller's running job (a worker sends one every `preview_every_steps` steps).
PREVIEW_WAIT_SECONDS = 1.5


async def progress(runtime: Runtime, principal: Principal) -> A1111Progress:
    """The caller's newest unfinished job through this door: its steps, and the latest
    live preview seen within PREVIEW_WAIT_SECONDS (else its status's progress)."""
    jobs = await callers_jobs(runtime, principal, DOOR)
    if not jobs:
        return A1111Progress(
            progress=0, eta_relative=0, state=A1111ProgressState(), current_image=None
        )
    job = jobs[0]
    step, total = (
        (job.status.progress.step, job.status.progress.total_steps)
        if job.status.progress
        else (0, 0)
    )
    eta, preview = 0.0, None
    if job.status.phase == JobPhase.RUNNING:
        live = await live_preview(runtime, job.uid)
        if live is not None:
            step, total, eta, preview = live
    state = A1111ProgressState(
        job=job.id,
        job_count=len(jobs),
        job_timestamp=job_timestamp(job),
        sampling_step=step,
        sampling_steps=total,
    )
    fraction = min(step / total, 1.0) if total else 0.0
    return A1111Progress(progress=fraction, eta_relative=eta, state=state, current_image=preview)


async def live_preview(runtime: Runtime, uid: str) -> tuple[int, int, float, str | None] | None:
    """(step, total steps, eta, preview) of the latest progress report heard within
    PREVIEW_WAIT_SECONDS, ending early at the first preview; None when none came or
    RabbitMQ is unavailable (the status's progress answers then)."""
    heard: events.Events = asyncio.Queue()
    channel: AbstractChannel | None = None
    latest = None
    try:
        async with asyncio.timeout(PREVIEW_WAIT_SECONDS):
            await runtime.amqp.ready()
            channel = await runtime.amqp.channel()
            await events.subscribe(runtime, channel, uid, partial(events.job_progress, uid), heard)
            while True:
                event = await heard.get()
                if event is None:
                    break
                data = event.data
                preview = data.get("preview")
                latest = (
                    data["step"],
                    data["totalSteps"],
                    data.get("etaSeconds") or 0.0,
                    preview.split(",", 1)[1] if preview else None,
                )
                if preview:
                    break
    except TimeoutError:
        pass
    except (AMQPError, RuntimeError) as error:
        logger.info("no live progress of %s: %r", uid, error)
    finally:
        if channel is not None:
            await events.close_channel(runtime, channel)
    return latest


async def interrupt(runtime: Runtime, principal: Principal) -> int:
    """Cancels the caller's unfinished jobs through this door; their waiting requests
    answer with no images and info.interrupted. Returns how many."""
    jobs = await callers_jobs(runtime, principal, DOOR)
    for job in jobs:
        await runtime.kube.cancel_job(job.namespace, job.id)
    return len(jobs)
