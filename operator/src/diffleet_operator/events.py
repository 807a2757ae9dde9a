"""Kubernetes Events, recorded off the hot path like client-go's EventBroadcaster.

`record` only enqueues; a few poster tasks create the Events. The queue is bounded: when
the API server falls behind, new Events are dropped (counted and logged once per burst)
rather than slowing the transitions they describe. Events are best effort by design;
the status is the record.

`tally` is for routine transitions that every job goes through (dispatched, started,
succeeded): they are counted per namespace and reason and posted as one Event per
window (`event_tally_seconds`) on the namespace, its count the jobs' and its message naming the
first few, as client-go's EventAggregator combines similar Events. Their cost then grows
with namespaces and time, not with jobs; what a user must see on the job itself (it
waits, is requeued, fails, is cancelled or quarantined) is still `record`ed on it.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Context
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.resources import gpu_pool
from diffleet_operator import metrics

COMPONENT = "diffleet-operator"
# Events waiting to be posted at most; further ones are dropped.
QUEUE_SIZE = 4096
# Events posted at once.
POSTERS = 16
# Jobs a tallied Event names; its count is exact.
TALLY_NAMES = 10

logger = logging.getLogger(__name__)

Post = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class PendingEvent:
    namespace: str
    body: dict[str, Any]


@dataclass
class Tally:
    """Routine transitions of one reason in one namespace, within a window."""

    first: datetime
    last: datetime
    count: int = 0
    names: list[str] = field(default_factory=list)

    def add(self, name: str, at: datetime) -> None:
        self.count += 1
        self.last = at
        if len(self.names) < TALLY_NAMES:
            self.names.append(name)

    def message(self) -> str:
        more = self.count - len(self.names)
        named = ", ".join(self.names) + (f" and {more} more" if more else "")
        return f"{self.count} job(s): {named}"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(
    involved: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    warning: bool,
    tally: Tally | None = None,
) -> PendingEvent:
    """A core/v1 Event about `involved` (a resource body), as the API server takes it; one
    about a cluster-scoped object (a GPUPool) goes to gpu_pool.EVENTS_NAMESPACE, where
    kubectl looks for it.
    A tally's Event carries its count and first and last times."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or gpu_pool.EVENTS_NAMESPACE
    now = datetime.now(UTC)
    first, last = (tally.first, tally.last) if tally else (now, now)
    return PendingEvent(
        namespace=namespace,
        body={
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": _time(first),
            "lastTimestamp": _time(last),
            "count": tally.count if tally else 1,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
        },
    )


def tally_event(namespace: str, reason: str, tally: Tally) -> PendingEvent:
    """The Event of a tally, on the Namespace (in it, so `kubectl get events -n` lists it)."""
    involved = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "namespace": namespace},
    }
    return event_body(involved, reason, tally.message(), warning=False, tally=tally)


class EventRecorder:
    def __init__(self, post: Post, tally_seconds: float) -> None:
        self._post = post
        self._tally_seconds = tally_seconds
        self._queue: asyncio.Queue[PendingEvent] = asyncio.Queue(QUEUE_SIZE)
        self._posters: list[asyncio.Task[None]] = []
        self._dropping = False
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._tallier: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the posters and the tallies' flush. They live as long as the operator's
        API client, across terms of leadership: started within one, kopf would wait for
        them when the term ends and then cancel them."""
        # An empty context: Events posted later carry no trace or log context of the
        # job whose transition came first.
        self._posters = [
            asyncio.create_task(self._run(), name=f"event-poster-{i}", context=Context())
            for i in range(POSTERS)
        ]
        self._tallier = asyncio.create_task(
            self._post_tallies(), name="event-tallies", context=Context()
        )

    def record(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        self._enqueue(event_body(involved, reason, message, warning=warning))

    def tally(self, involved: Mapping[str, Any], reason: str) -> None:
        """Counts a routine transition of `involved` (a job) into its namespace's Event of
        `reason` for this window."""
        meta = involved["metadata"]
        now = datetime.now(UTC)
        key = (meta["namespace"], reason)
        self._tallies.setdefault(key, Tally(first=now, last=now)).add(meta["name"], now)

    def _enqueue(self, event: PendingEvent) -> None:
        try:
            self._queue.put_nowait(event)
            self._dropping = False
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()
            if not self._dropping:
                logger.warning("Event queue full (%d): dropping Events", QUEUE_SIZE)
            self._dropping = True

    async def _post_tallies(self) -> None:
        while True:
            await asyncio.sleep(self._tally_seconds)
            self._flush_tallies()

    def _flush_tallies(self) -> None:
        tallies, self._tallies = self._tallies, {}
        for (namespace, reason), tally in tallies.items():
            self._enqueue(tally_event(namespace, reason, tally))

    async def close(self, within: float) -> None:
        """Posts what is tallied and queued (for at most `within` seconds), then stops."""
        if self._tallier is not None:
            self._tallier.cancel()
            await asyncio.gather(self._tallier, return_exceptions=True)
        self._flush_tallies()
        try:
            await asyncio.wait_for(self._queue.join(), timeout=within)
        except TimeoutError:
            logger.warning("%d Event(s) not posted at shutdown", self._queue.qsize())
        for poster in self._posters:
            poster.cancel()
        await asyncio.gather(*self._posters, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._post(event.namespace, event.body)
            except (ApiException, aiohttp.ClientError, TimeoutError) as error:
                logger.warning(
                    "Event %s on %s not recorded: %s",
                    event.body["reason"],
                    event.body["involvedObject"]["name"],
                    error,
                )
            finally:
                self._queue.task_done()
