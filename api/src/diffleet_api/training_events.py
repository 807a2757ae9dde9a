"""Live events of one training, for Server-Sent Events: its phase, checkpoints and
validation images from a watch of the TrainingJob, its step and loss from the progress
exchange (routing key training.<uid>). A finished phase ends the stream.

Events: `pending`, `queued`, `running` (the phase, attempts, step, stepsRun, loss,
preemptions, worker, reason), `progress` (step, totalSteps, loss, stepsRun, etaSeconds),
`checkpoint` (step, uri, a presigned url), `validation` (step, index, uri, a presigned
url), then `succeeded`, `failed` or `cancelled` (the training). Ids are
"<attempts>-<step>-<kind>": a client reconnecting with Last-Event-ID gets the current
phase again and the checkpoints, images and progress it has not seen.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aio_pika.abc import AbstractChannel
from pydantic import ValidationError

from diffleet_api.events import (
    Event,
    EventId,
    Events,
    close_channel,
    subscribed_channel,
    watch_ended,
)
from diffleet_api.kube import Body
from diffleet_api.runtime import Runtime
from diffleet_api.trainings import public_training
from diffleet_core.messages import TrainingProgress
from diffleet_core.queues import training_progress_key
from diffleet_core.resources import training_job
from diffleet_core.resources.training_job import TrainingJobStatus, TrainingPhase
from diffleet_core.storage import S3Location, training_prefix

logger = logging.getLogger(__name__)

WATCH_SECONDS = 300
# The last part of an event id: what happened at a step, in the order it happens.
PROGRESS, CHECKPOINT, VALIDATION = 0, 1, 2


@dataclass
class Seen:
    """What a stream has sent of the training's status."""

    phase: str | None = None
    checkpoints: set[int] = field(default_factory=set)
    images: set[tuple[int, int]] = field(default_factory=set)


def presigned(runtime: Runtime, meta: dict[str, Any], uri: str) -> dict[str, str]:
    """A GET URL of a training's object, signed only when the object is under the
    training's own key prefix of the outputs bucket (the status is the operator's, but a
    URL is a capability)."""
    try:
        location = S3Location.parse(uri)
    except ValueError:
        return {}
    prefix = training_prefix(meta["namespace"], meta["name"], meta["uid"])
    if location.bucket != runtime.platform.buckets.outputs or not location.key.startswith(prefix):
        return {}
    seconds = runtime.settings.presign_seconds
    url = runtime.s3.generate_presigned_url(
        "get_object", Params={"Bucket": location.bucket, "Key": location.key}, ExpiresIn=seconds
    )
    expires = datetime.now(UTC) + timedelta(seconds=seconds)
    return {"url": url, "expiresAt": expires.isoformat()}


def status_events(runtime: Runtime, body: Body, seen: Seen) -> list[Event]:
    """The events of a status not sent yet: its new checkpoints and validation images,
    then its phase when it changed (a finished phase last, ending the stream)."""
    training = public_training(body)
    status = training.status
    attempts = status.attempts
    events = []
    for checkpoint in status.checkpoints or []:
        if checkpoint.step not in seen.checkpoints:
            seen.checkpoints.add(checkpoint.step)
            data = {"step": checkpoint.step, "uri": checkpoint.uri}
            data |= presigned(runtime, body["metadata"], checkpoint.uri)
            events.append(Event("checkpoint", (attempts, checkpoint.step, CHECKPOINT), data))
    for image in status.validation_images or []:
        if (image.step, image.index) not in seen.images:
            seen.images.add((image.step, image.index))
            data = {"step": image.step, "index": image.index, "uri": image.uri}
            data |= presigned(runtime, body["metadata"], image.uri)
            events.append(Event("validation", (attempts, image.step, VALIDATION), data))
    phase = status.phase or TrainingPhase.PENDING
    if phase != seen.phase:
        seen.phase = phase
        events.append(phase_event(training.model_dump(mode="json", by_alias=True), status))
    return events


def phase_event(training: dict[str, Any], status: TrainingJobStatus) -> Event:
    """The phase; a finished one carries the training and is the last event. Its id
    orders it after the progress of its step (it is sent whatever Last-Event-ID says)."""
    phase = status.phase or TrainingPhase.PENDING
    ident = (status.attempts, status.step, VALIDATION + 1)
    if phase.finished:
        return Event(phase.value.lower(), ident, training, last=True)
    data = {
        "phase": phase.value,
        "attempts": status.attempts,
        "step": status.step,
        "stepsRun": status.steps_run,
        "loss": status.loss,
        "preemptions": status.preemptions,
        "worker": status.worker,
        "reason": status.reason,
    }
    return Event(phase.value.lower(), ident, data)


def progress_event(report: TrainingProgress) -> Event:
    data = {
        "step": report.step,
        "totalSteps": report.total_steps,
        "loss": report.loss,
        "stepsRun": report.steps_run,
        "etaSeconds": report.eta_seconds,
    }
    return Event("progress", (report.job.attempt, report.step, PROGRESS), data)


async def open_stream(
    runtime: Runtime, body: Body, last_seen: EventId, keepalive: float
) -> AsyncGenerator[str, None]:
    """Subscribes to the training's progress, then returns its SSE frames; 503 when
    RabbitMQ cannot be reached within the request timeout."""
    events: Events = asyncio.Queue()
    uid = body["metadata"]["uid"]
    key = training_progress_key(uid)
    channel = await subscribed_channel(runtime, key, partial(progress, uid), events)
    return stream(runtime, body, channel, events, last_seen, keepalive)


async def stream(
    runtime: Runtime,
    body: Body,
    channel: AbstractChannel,
    events: Events,
    last_seen: EventId,
    keepalive: float,
) -> AsyncGenerator[str, None]:
    """SSE frames until the training finishes, a source of events is lost (the client
    reconnects with Last-Event-ID) or the client leaves. Phase events are always sent;
    checkpoints and images once (those of the status at connection only when newer than
    `last_seen`); progress only forward (reports may come in any order)."""
    watcher: asyncio.Task[None] | None = None
    seen = Seen()
    try:
        for first in status_events(runtime, body, seen):
            if first.id[2] > VALIDATION or first.id > last_seen:  # a phase, or not seen yet
                events.put_nowait(first)
        watcher = asyncio.create_task(follow(runtime, body, seen, events))
        watcher.add_done_callback(lambda task: watch_ended(events, task))
        while True:
            try:
                event = await asyncio.wait_for(events.get(), keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            if event.id[2] == PROGRESS:
                if event.id <= last_seen:
                    continue
                last_seen = event.id
            yield event.frame()
            if event.last:
                return
    finally:
        if watcher is not None:
            watcher.cancel()
        await close_channel(runtime, channel)


def progress(uid: str, body: bytes) -> Event | None:
    """A training's progress message as an event; None (logged) when malformed."""
    try:
        report = TrainingProgress.model_validate_json(body)
    except ValidationError:
        logger.warning("malformed training progress message for %s", uid)
        return None
    return progress_event(report)


async def follow(runtime: Runtime, body: Body, seen: Seen, events: Events) -> None:
    """The training's status changes, from a watch on it alone."""
    meta = body["metadata"]
    version = meta["resourceVersion"]
    while True:
        async for kind, changed in runtime.kube.job_events(
            meta["namespace"],
            version,
            WATCH_SECONDS,
            field_selector=f"metadata.name={meta['name']}",
            plural=training_job.PLURAL,
        ):
            if kind in ("BOOKMARK", "ERROR"):
                continue
            version = changed["metadata"]["resourceVersion"]
            if kind == "DELETED":
                status = changed.setdefault("status", {})
                status.setdefault("phase", TrainingPhase.CANCELLED.value)
                if status["phase"] not in {p.value for p in TrainingPhase if p.finished}:
                    status["phase"] = TrainingPhase.CANCELLED.value
            for event in status_events(runtime, changed, seen):
                events.put_nowait(event)
