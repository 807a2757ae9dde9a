"""Which pods the runner runs: diffleet's pods bound to kwok nodes, followed by a watch."""

import asyncio
import logging
import random
import time
from pathlib import Path

from kubernetes_asyncio import client, watch

from diffleet_core.fleet import PART_OF, PART_OF_LABEL
from hack.pod_runner.addresses import PodAddresses
from hack.pod_runner.environment import REQUEST_TIMEOUT
from hack.pod_runner.probes import container_port
from hack.pod_runner.supervisor import PodSupervisor, patch_pod_status

logger = logging.getLogger("pod_runner")
POD_SELECTOR = f"{PART_OF_LABEL}={PART_OF}"
KWOK_NODE_SELECTOR = "type=kwok"
WATCH_SECONDS = 240
RECONNECT_CAP_SECONDS = 30.0
NODE_REFRESH_SECONDS = 5.0


class PodRunner:
    """Starts a supervisor per pod, tells it of its pod's deletion, stops them all on exit."""

    def __init__(self, api: client.ApiClient, state_dir: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.state_dir = state_dir
        self.pods: dict[str, PodSupervisor] = {}
        self.addresses = PodAddresses()
        self._kwok_nodes: set[str] = set()
        self._nodes_listed = 0.0

    async def run(self) -> None:
        """Lists, then watches from the listed version; reconnects with a capped, jittered
        backoff on any failure, listing again (which also adopts what a gap missed)."""
        failures = 0
        while True:
            try:
                version = await self._reconcile()
                failures = 0
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the runner outlives API outages
                failures += 1
                delay = min(2**failures, RECONNECT_CAP_SECONDS) * random.uniform(0.5, 1)  # noqa: S311 - jitter
                logger.warning("watch failed (%s); again in %.1fs", error, delay)
                await asyncio.sleep(delay)

    async def _reconcile(self) -> str:
        listed = await self.core.list_pod_for_all_namespaces(
            label_selector=POD_SELECTOR, _request_timeout=REQUEST_TIMEOUT
        )
        present = set()
        for pod in listed.items:
            present.add(pod.metadata.uid)
            await self._handle(pod)
        for key, supervisor in list(self.pods.items()):
            if supervisor.uid not in present:
                self._forget(key, supervisor)
        return str(listed.metadata.resource_version)

    async def _watch(self, version: str) -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                self.core.list_pod_for_all_namespaces,
                label_selector=POD_SELECTOR,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=WATCH_SECONDS + REQUEST_TIMEOUT,
            ):
                pod = event["object"]
                if event["type"] == "DELETED":
                    key = f"{pod.metadata.namespace}/{pod.metadata.name}"
                    supervisor = self.pods.get(key)
                    if supervisor and supervisor.uid == pod.metadata.uid:
                        self._forget(key, supervisor)
                elif event["type"] in ("ADDED", "MODIFIED"):
                    await self._handle(pod)

    def _forget(self, key: str, supervisor: PodSupervisor) -> None:
        """The pod is gone from the API (force-deleted): its container stops at once."""
        supervisor.delete(0)
        self.pods.pop(key, None)

    async def _handle(self, pod: client.V1Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        supervisor = self.pods.get(key)
        if supervisor and supervisor.uid != pod.metadata.uid:
            self._forget(key, supervisor)  # replaced by a new pod of the same name
            supervisor = None
        deleting = pod.metadata.deletion_timestamp is not None
        if supervisor:
            if deleting:
                supervisor.delete(float(pod.metadata.deletion_grace_period_seconds or 0))
            return
        if not pod.spec.node_name or not await self._on_kwok_node(pod.spec.node_name):
            return
        finished = pod.status and pod.status.phase in ("Succeeded", "Failed")
        if deleting:
            # No process here (the runner restarted): only the removal is left to do.
            supervisor = PodSupervisor(self.api, pod, self.state_dir, self.addresses)
            supervisor.delete(0)
        elif finished:
            return
        elif self._lost_with_never(pod):
            await self._mark_lost(pod)
            return
        else:
            supervisor = PodSupervisor(self.api, pod, self.state_dir, self.addresses)
        self.pods[key] = supervisor
        supervisor.task.add_done_callback(lambda _: self._done(key, supervisor))

    def _done(self, key: str, supervisor: PodSupervisor) -> None:
        if self.pods.get(key) is supervisor:
            del self.pods[key]

    @staticmethod
    def _lost_with_never(pod: client.V1Pod) -> bool:
        """A pod that ran under an earlier runner and may not be restarted."""
        started = bool(pod.status and pod.status.container_statuses)
        return started and pod.spec.restart_policy == "Never"

    async def _mark_lost(self, pod: client.V1Pod) -> None:
        await patch_pod_status(self.core, pod, {"phase": "Failed", "reason": "PodRunnerRestarted"})

    async def _on_kwok_node(self, node: str) -> bool:
        stale = time.monotonic() - self._nodes_listed > NODE_REFRESH_SECONDS
        if node not in self._kwok_nodes and stale:
            nodes = await self.core.list_node(
                label_selector=KWOK_NODE_SELECTOR, _request_timeout=REQUEST_TIMEOUT
            )
            self._kwok_nodes = {n.metadata.name for n in nodes.items}
            self._nodes_listed = time.monotonic()
        return node in self._kwok_nodes

    async def stop(self, grace_seconds: float) -> None:
        """The runner stops: every container ends; the pods stay, for the next runner."""
        await asyncio.gather(*(s.stop(grace_seconds) for s in self.pods.values()))

    def report(self) -> list[dict[str, object]]:
        """What runs now, by pod: how (a process, or hosted here), under which pid, on
        which address."""
        return [
            {"pod": key, "kind": s.workload.kind, "pid": s.workload.pid, "ip": s.address}
            for key, s in sorted(self.pods.items())
            if s.workload is not None
        ]

    def endpoints(
        self, namespace: str, selector: dict[str, str], target_port: int | str
    ) -> list[tuple[str, int]]:
        """The ready pods a Service with `selector` reaches, as (pod IP, port): those not
        terminating, or the terminating ones when no other is ready (as kube-proxy does)."""
        serving: list[tuple[str, int]] = []
        terminating: list[tuple[str, int]] = []
        for supervisor in self.pods.values():
            labels = supervisor.pod.metadata.labels or {}
            matches = selector and all(labels.get(k) == v for k, v in selector.items())
            if supervisor.namespace != namespace or not matches or not supervisor.ready:
                continue
            try:
                port = container_port(supervisor.container, target_port)
            except ValueError:
                continue
            found = (supervisor.address, port)
            (terminating if supervisor.deleting else serving).append(found)
        return sorted(serving or terminating)
