"""kube-proxy's part for diffleet's NodePort Services: 127.0.0.1:<nodePort> forwards each
TCP connection to a ready pod of the Service, round robin.

The endpoints are the pods the runner runs whose labels match the Service's selector (and
that are ready): EndpointSlices cannot hold them, as the API server refuses loopback
addresses in EndpointSlices and Endpoints.
"""

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes_asyncio import client

from diffleet_core.fleet import PART_OF, PART_OF_LABEL
from hack.pod_runner.environment import REQUEST_TIMEOUT

logger = logging.getLogger("pod_runner")
SERVICE_SELECTOR = f"{PART_OF_LABEL}={PART_OF}"
SYNC_SECONDS = 2.0
CONNECT_TIMEOUT = 2.0
CHUNK = 64 * 1024
# Once one side has closed, how long the other may still send before both are closed.
HALF_CLOSED_SECONDS = 10.0
NODE_ADDRESS = "127.0.0.1"

Endpoints = Callable[[str, dict[str, str], int | str], list[tuple[str, int]]]


@dataclass(frozen=True)
class Target:
    """Where a node port leads: a Service's selector and its port's targetPort."""

    namespace: str
    service: str
    selector: tuple[tuple[str, str], ...]
    target_port: int | str


def node_port_targets(services: list[client.V1Service]) -> dict[int, Target]:
    """The node ports of NodePort (and LoadBalancer) Services, and where each leads."""
    targets: dict[int, Target] = {}
    for service in services:
        spec = service.spec
        if spec.type not in ("NodePort", "LoadBalancer") or not spec.selector:
            continue
        for port in spec.ports or []:
            if port.node_port:
                targets[port.node_port] = Target(
                    service.metadata.namespace,
                    service.metadata.name,
                    tuple(sorted(spec.selector.items())),
                    port.target_port or port.port,
                )
    return targets


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class NodePortProxy:
    """Follows the Services (listed every SYNC_SECONDS), listens on their node ports."""

    def __init__(self, api: client.ApiClient, endpoints: Endpoints) -> None:
        self.core = client.CoreV1Api(api)
        self._endpoints = endpoints
        self._targets: dict[int, Target] = {}
        self._servers: dict[int, asyncio.Server] = {}
        self._turn = itertools.count()
        # The forwarding tasks (asyncio keeps only weak references to running tasks).
        self._connections: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            try:
                listed = await self.core.list_service_for_all_namespaces(
                    label_selector=SERVICE_SELECTOR, _request_timeout=REQUEST_TIMEOUT
                )
                await self._sync(node_port_targets(listed.items))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the proxy outlives API outages
                logger.warning("services: %s", error)
            await asyncio.sleep(SYNC_SECONDS)

    async def _sync(self, targets: dict[int, Target]) -> None:
        self._targets = targets
        for port in set(self._servers) - set(targets):
            self._servers.pop(port).close()
            logger.info("node port %s closed", port)
        for port, target in targets.items():
            if port in self._servers:
                continue
            try:
                self._servers[port] = await asyncio.start_server(
                    functools.partial(self._forward, port), NODE_ADDRESS, port
                )
            except OSError as error:
                logger.warning("node port %s of %s: %s", port, target.service, error)
                continue
            logger.info("node port %s -> %s/%s", port, target.namespace, target.service)

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        for connection in list(self._connections):
            connection.cancel()

    async def _connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to one of the Service's ready pods: round robin from the next one
        in turn, each tried once (a refused or slow connect moves to the next)."""
        target = self._targets.get(port)
        if target is None:
            raise ConnectionError(f"node port {port} leads nowhere now")
        found = self._endpoints(target.namespace, dict(target.selector), target.target_port)
        if not found:
            raise ConnectionError(f"{target.namespace}/{target.service} has no ready pod")
        start = next(self._turn) % len(found)
        for address, pod_port in found[start:] + found[:start]:
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(
                    asyncio.open_connection(address, pod_port), CONNECT_TIMEOUT
                )
        raise ConnectionError(f"no pod of {target.namespace}/{target.service} accepted")

    async def _forward(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            upstream_reader, upstream_writer = await self._connect(port)
        except ConnectionError as error:
            logger.warning("%s", error)
            writer.close()
            return
        pipes = {
            asyncio.create_task(_pipe(reader, upstream_writer)),
            asyncio.create_task(_pipe(upstream_reader, writer)),
        }
        try:
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                await asyncio.wait(pending, timeout=HALF_CLOSED_SECONDS)
        finally:
            for pipe in pipes:
                pipe.cancel()
            upstream_writer.close()
            writer.close()
