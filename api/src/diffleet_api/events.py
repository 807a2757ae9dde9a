"""Live events of one job, for Server-Sent Events: phase changes from a watch of the
GenerationJob, denoising progress (with previews) from the progress exchange (routing key
= the job's uid). Terminal phases end the stream.

Every event has an id "<attempt>-<stage>-<step>" that orders it within the job, so a
client reconnecting with Last-Event-ID gets the current state and what follows, never
what it has already seen. Progress is transient: steps made while disconnected are not
replayed, the current phase is.
"""

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from pydantic import ValidationError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from diffleet_api.errors import RateLimitedError, UnavailableError
from diffleet_api.history import public_job
from diffleet_api.kube import Body
from diffleet_api.queue_positions import queue_positions
from diffleet_api.runtime import Runtime
from diffleet_api.tenants import Tenant
from diffleet_core.messages import JobProgress
from diffleet_core.resources.generation_job import JobPhase

logger = logging.getLogger(__name__)

STAGE = {
    JobPhase.PENDING: 0,
    JobPhase.QUEUED: 1,
    JobPhase.SCHEDULED: 2,
    JobPhase.RUNNING: 3,
    JobPhase.SUCCEEDED: 9,
    JobPhase.FAILED: 9,
    JobPhase.CANCELLED: 9,
}
WATCH_SECONDS = 300
RETRY = {"Retry-After": "2"}

EventId = tuple[int, int, int]


@dataclass(frozen=True)
class Event:
    name: str
    id: EventId
    data: dict[str, Any]
    last: bool = False

    def frame(self) -> str:
        ident = "-".join(str(part) for part in self.id)
        return f"id: {ident}\nevent: {self.name}\ndata: {json.dumps(self.data)}\n\n"


def parse_event_id(text: str | None) -> EventId:
    """A Last-Event-ID as an ordered tuple; anything unreadable means "from the start"."""
    try:
        attempt, stage, step = (int(part) for part in (text or "").split("-"))
    except ValueError:
        return (-1, -1, -1)
    return (attempt, stage, step)


async def phase_event(runtime: Runtime, body: Body) -> Event:
    job = public_job(body)
    phase = job.status.phase or JobPhase.PENDING
    ident = (job.status.attempts, STAGE[phase], 0)
    if phase.finished:
        return Event(phase.value.lower(), ident, job.model_dump(mode="json", by_alias=True), True)
    data: dict[str, Any] = {"phase": phase.value, "attempts": job.status.attempts}
    if phase == JobPhase.QUEUED:
        data["queue"] = job.status.queue
        data["position"] = (await queue_positions(runtime, [job]))[job.uid]
    if phase in (JobPhase.SCHEDULED, JobPhase.RUNNING):
        data["worker"] = job.status.worker
    return Event(phase.value.lower(), ident, data)


def progress_event(report: JobProgress) -> Event:
    data: dict[str, Any] = {
        "step": report.step,
        "totalSteps": report.total_steps,
        "etaSeconds": report.eta_seconds,
    }
    if report.preview_png_base64:
        data["preview"] = f"data:image/png;base64,{report.preview_png_base64}"
    return Event("progress", (report.job.attempt, STAGE[JobPhase.RUNNING], report.step), data)


Events = asyncio.Queue[Event | None]
"""What a stream sends, in order; None when a source of its events is lost."""


async def open_stream(
    runtime: Runtime, body: Body, last_seen: EventId, keepalive: float
) -> AsyncGenerator[str, None]:
    """Subscribes to the job's progress, then returns its SSE frames."""
    events: Events = asyncio.Queue()
    uid = body["metadata"]["uid"]
    channel = await subscribed_channel(runtime, uid, partial(job_progress, uid), events)
    return stream(runtime, body, channel, events, last_seen, keepalive)


async def subscribed_channel(
    runtime: Runtime, routing_key: str, to_event: Callable[[bytes], Event | None], events: Events
) -> AbstractChannel:
    """A channel consuming the progress exchange under `routing_key` into `events`
    (`to_event` turns a message into an event; None drops it). RabbitMQ unreachable
    (reconnecting, say) is a 503 now, within the request timeout, not a silent stream."""
    channel: AbstractChannel | None = None
    try:
        # The robust connection reconnects by itself: waiting for it is bounded here.
        async with asyncio.timeout(runtime.settings.request_timeout_seconds):
            await runtime.amqp.ready()
            channel = await runtime.amqp.channel()
            await subscribe(runtime, channel, routing_key, to_event, events)
    except BaseException as error:
        if channel is not None:
            await close_channel(runtime, channel)
        # aio_pika and aiormq raise RuntimeError for a connection lost meanwhile.
        if isinstance(error, TimeoutError | AMQPError | RuntimeError):
            raise UnavailableError("RabbitMQ is unavailable; retry", headers=RETRY) from error
        raise
    # RabbitMQ lost (its channel closes, even if it comes back) or the watch failed: the
    # stream ends, so that the client reconnects with Last-Event-ID.
    channel.close_callbacks.add(lambda *_: events.put_nowait(None))
    return channel


async def stream(
    runtime: Runtime,
    body: Body,
    channel: AbstractChannel,
    events: Events,
    last_seen: EventId,
    keepalive: float,
) -> AsyncGenerator[str, None]:
    """SSE frames for the job until it finishes, a source of events is lost (the client
    reconnects with Last-Event-ID) or the client leaves."""
    meta = body["metadata"]
    watcher: asyncio.Task[None] | None = None
    try:
        events.put_nowait(await phase_event(runtime, body))
        watcher = asyncio.create_task(follow(runtime, meta, events))
        watcher.add_done_callback(partial(watch_ended, events))
        while True:
            try:
                event = await asyncio.wait_for(events.get(), keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                logger.info("event stream of %s ended: RabbitMQ or its watch lost", meta["uid"])
                return
            if event.id <= last_seen:
                if event.last:
                    return
                continue
            last_seen = event.id
            yield event.frame()
            if event.last:
                return
    finally:
        if watcher is not None:
            watcher.cancel()
        await close_channel(runtime, channel)


def watch_ended(events: Events, watch: "asyncio.Task[None]") -> None:
    """The job's watch failed (the API server restarting, say): the stream ends."""
    if not watch.cancelled() and (error := watch.exception()):
        logger.info("the watch of an event stream failed: %r", error)
    events.put_nowait(None)


async def close_channel(runtime: Runtime, channel: AbstractChannel) -> None:
    """Closes a stream's channel; one RabbitMQ took with it is not waited for."""
    try:
        await asyncio.shield(
            asyncio.wait_for(channel.close(), runtime.settings.request_timeout_seconds)
        )
    except Exception as error:  # noqa: BLE001 - best effort: the stream is over either way
        logger.info("closing an event stream's channel failed: %r", error)


class EventStream(StreamingResponse):
    """A `text/event-stream` response that, however it ends (the last event, the client
    leaving, an error), closes its frames and then calls `done`."""

    def __init__(self, frames: AsyncGenerator[str, None], done: Callable[[], None]) -> None:
        super().__init__(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.frames = frames
        self.done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await asyncio.shield(self.frames.aclose())
            finally:
                self.done()


Opener = Callable[[Runtime, Body, EventId, float], Awaitable[AsyncGenerator[str, None]]]


async def tenant_stream(
    runtime: Runtime, tenant: Tenant, body: Body, open_frames: Opener, last_event_id: str | None
) -> EventStream:
    """The frames `open_frames` makes for `body`, as a stream that counts against the
    tenant's tier limit of open streams (per API process: 429 beyond), given back however
    it ends."""
    limit = runtime.settings.tier_limits[tenant.tier].event_streams
    if not runtime.streams.take(tenant.id, limit):
        raise RateLimitedError(
            f"{limit} event streams are open for this tenant, the most its"
            f" {tenant.tier.value} tier allows; close one first"
        )
    try:
        frames = await open_frames(
            runtime, body, parse_event_id(last_event_id), runtime.settings.sse_keepalive_seconds
        )
    except BaseException:
        runtime.streams.give_back(tenant.id)
        raise
    return EventStream(frames, done=lambda: runtime.streams.give_back(tenant.id))


async def subscribe(
    runtime: Runtime,
    channel: AbstractChannel,
    routing_key: str,
    to_event: Callable[[bytes], Event | None],
    events: Events,
) -> None:
    exchange = await channel.declare_exchange(
        runtime.platform.topology.progress_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key=routing_key)

    async def on_message(message: AbstractIncomingMessage) -> None:
        event = to_event(message.body)
        if event is not None:
            events.put_nowait(event)

    await queue.consume(on_message, no_ack=True)


def job_progress(uid: str, body: bytes) -> Event | None:
    """A job's progress message as an event; None (logged) when malformed."""
    try:
        report = JobProgress.model_validate_json(body)
    except ValidationError:
        logger.warning("malformed progress message for %s", uid)
        return None
    return progress_event(report)


async def follow(runtime: Runtime, meta: dict[str, Any], events: Events) -> None:
    """Phase changes of the job, from a watch on it alone."""
    version = meta["resourceVersion"]
    phase = None
    while True:
        async for kind, body in runtime.kube.job_events(
            meta["namespace"],
            version,
            WATCH_SECONDS,
            field_selector=f"metadata.name={meta['name']}",
        ):
            if kind in ("BOOKMARK", "ERROR"):
                continue
            version = body["metadata"]["resourceVersion"]
            if kind == "DELETED":
                body.setdefault("status", {}).setdefault("phase", JobPhase.CANCELLED.value)
            current = (body.get("status") or {}).get("phase")
            if current != phase or kind == "DELETED":
                phase = current
                events.put_nowait(await phase_event(runtime, body))
