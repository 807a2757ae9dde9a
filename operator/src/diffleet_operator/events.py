"""Kubernetes Events, recorded off the hot path like client-go's EventBroadcaster.

`record` only enqueues; a few poster tasks create the Events. The queue is bounded: when
the API server falls behind, new Events are dropped (counted and logged once per burst)
rather than slowing the transitions they describe. Events are best effort by design;
the status is the record.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Context
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_operator import metrics

COMPONENT = "diffleet-operator"
# Where Events about cluster-scoped objects go (client-go's choice too).
CLUSTER_EVENTS_NAMESPACE = "default"
# Events waiting to be posted at most; further ones are dropped.
QUEUE_SIZE = 4096
# Events posted at once.
POSTERS = 16

logger = logging.getLogger(__name__)

Post = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class PendingEvent:
    namespace: str
    body: dict[str, Any]


def event_body(
    involved: Mapping[str, Any], reason: str, message: str, *, warning: bool
) -> PendingEvent:
    """A core/v1 Event about `involved` (a resource body), as the API server takes it; one
    about a cluster-scoped object (a GPUPool) goes to `default`, as kubectl looks for it."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or CLUSTER_EVENTS_NAMESPACE
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
        },
    )


class EventRecorder:
    def __init__(self, post: Post) -> None:
        self._post = post
        self._queue: asyncio.Queue[PendingEvent] = asyncio.Queue(QUEUE_SIZE)
        self._posters: list[asyncio.Task[None]] = []
        self._dropping = False

    def record(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        if not self._posters:
            # Posters outlive the job whose Event started them: an empty context, so that
            # its trace and log context stay off the Events they post later.
            self._posters = [
                asyncio.create_task(self._run(), name=f"event-poster-{i}", context=Context())
                for i in range(POSTERS)
            ]
        try:
            self._queue.put_nowait(event_body(involved, reason, message, warning=warning))
            self._dropping = False
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()
            if not self._dropping:
                logger.warning("Event queue full (%d): dropping Events", QUEUE_SIZE)
            self._dropping = True

    async def close(self, within: float) -> None:
        """Posts what is queued (for at most `within` seconds), then stops."""
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
