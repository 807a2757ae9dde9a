"""The watch on the GPUPools' worker pods, in the fleet namespace only (the operator's
Role there; kopf would watch pods cluster-wide): lists them, then follows their changes
from the list's resourceVersion, and lists again when the watch expires (410) or fails.

It feeds `WorkerPods`; a pod that goes or stops counting lifts its cordon and asks the
autoscaler for a round, which replaces it.
"""

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.fleet import GPUPOOL_LABEL
from diffleet_operator.cache.fleet import FleetInventory
from diffleet_operator.cache.worker_pods import WorkerPods
from diffleet_operator.kube import Kube
from diffleet_operator.quarantine import describe

logger = logging.getLogger(__name__)

SELECTOR = GPUPOOL_LABEL  # every pod that has the label
# The server ends each watch after this long; the next one goes on from where it was.
WATCH_SECONDS = 60
FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 8.0


class PodWatch:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        pods: WorkerPods,
        fleet: FleetInventory,
        trigger: Callable[[], None],
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pods = pods
        self.fleet = fleet
        self.trigger = trigger

    async def run(self) -> None:
        pause = FIRST_PAUSE_SECONDS
        while True:
            try:
                await self._list_and_watch()
            except Exception as error:  # noqa: BLE001 - listed again after a pause
                delay = random.uniform(pause / 2, pause)  # noqa: S311 - jitter
                logger.warning("worker pod watch: %s; again in %.1fs", describe(error), delay)
                await asyncio.sleep(delay)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)
            else:
                pause = FIRST_PAUSE_SECONDS

    async def _list_and_watch(self) -> None:
        """Returns when the watch's resourceVersion expired (410): list again."""
        items, version = await self.kube.list_pods(self.namespace, SELECTOR)
        listed = {item["metadata"]["name"] for item in items}
        for gone in {pod.name for pod in self.pods.all()} - listed:
            self._removed(gone)
        for item in items:
            self._changed(item)
        while True:
            events = self.kube.pod_events(self.namespace, SELECTOR, version, WATCH_SECONDS)
            try:
                async for kind, body in events:
                    version = body["metadata"]["resourceVersion"]
                    if kind == "DELETED":
                        self._removed(body["metadata"]["name"])
                    elif kind in ("ADDED", "MODIFIED"):
                        self._changed(body)
            except ApiException as error:
                if error.status == 410:
                    return  # expired: list again
                raise

    def _changed(self, body: Mapping[str, Any]) -> None:
        before = self.pods.get(body["metadata"]["name"])
        pod = self.pods.upsert(body)
        if before is None or before.active != pod.active:
            self.trigger()

    def _removed(self, name: str) -> None:
        self.pods.remove(name)
        self.fleet.uncordon(name)
        self.trigger()
