"""The dispatch pause (diffleet_core.dispatch_pause), followed from its ConfigMap in the
fleet namespace: listed by name, then watched from the list's resourceVersion, and
listed again when the watch expires (410) or fails. The operator's Role there covers
it; kopf would watch ConfigMaps cluster-wide.

Until the first list answers, dispatch counts as paused: an operator started during a
drain never dispatches before it has read the pause. A missing ConfigMap is no pause;
one the operator may not read (403) is none either, logged as an error, so an install
without the RBAC rule still dispatches.
"""

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.dispatch_pause import is_paused
from diffleet_operator.kube import Kube
from diffleet_operator.quarantine import describe

logger = logging.getLogger(__name__)

# The server ends each watch after this long; the next one goes on from where it was.
WATCH_SECONDS = 60
FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 8.0


class DispatchPause:
    """Whether the dispatch loop may dispatch new jobs now."""

    def __init__(self) -> None:
        self.known = False
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused or not self.known

    def set(self, paused: bool) -> bool:
        """Records what the ConfigMap says; True when that changes whether dispatch runs."""
        before = self.paused
        self.known, self._paused = True, paused
        return before != self.paused


class DispatchPauseWatch:
    def __init__(
        self, kube: Kube, namespace: str, name: str, pause: DispatchPause, wake: Callable[[], None]
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.pause = pause
        self.wake = wake

    async def run(self) -> None:
        delay = FIRST_PAUSE_SECONDS
        while True:
            try:
                await self._list_and_watch()
            except Exception as error:  # noqa: BLE001 - listed again after a pause
                if isinstance(error, ApiException) and error.status == 403:
                    logger.error(
                        "cannot read ConfigMap %s/%s (needs get, list, watch on configmaps): "
                        "dispatch is never paused",
                        self.namespace,
                        self.name,
                    )
                    self._apply(None)
                    delay = MAX_PAUSE_SECONDS
                else:
                    logger.warning("dispatch pause watch: %s", describe(error))
            else:
                delay = FIRST_PAUSE_SECONDS
                continue
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter
            delay = min(delay * 2, MAX_PAUSE_SECONDS)

    async def _list_and_watch(self) -> None:
        """Returns when the watch's resourceVersion expired (410): list again."""
        items, version = await self.kube.list_config_map(self.namespace, self.name)
        self._apply(items[0] if items else None)
        while True:
            events = self.kube.config_map_events(self.namespace, self.name, version, WATCH_SECONDS)
            try:
                async for kind, body in events:
                    version = body["metadata"]["resourceVersion"]
                    if kind == "DELETED":
                        self._apply(None)
                    elif kind in ("ADDED", "MODIFIED"):
                        self._apply(body)
            except ApiException as error:
                if error.status == 410:
                    return  # expired: list again
                raise

    def _apply(self, body: dict[str, Any] | None) -> None:
        paused = is_paused(body.get("data") if body else None)
        if self.pause.set(paused):
            state = "paused" if paused else "running"
            logger.info("dispatch %s (ConfigMap %s/%s)", state, self.namespace, self.name)
            self.wake()
