"""Readiness probes of a pod's container, run on this host (httpGet on the pod's IP, exec)."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
from kubernetes_asyncio import client


def container_port(container: client.V1Container, port: int | str) -> int:
    """A port by number, or by the name the container declares for it."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.ports or []:
        if declared.name == port:
            return int(declared.container_port)
    raise ValueError(f"no container port named {port}")


async def check(
    probe: client.V1Probe, container: client.V1Container, env: dict[str, str], address: str
) -> bool:
    """One try of the probe on the pod's `address`: True when it passes within its
    timeoutSeconds."""
    timeout = float(probe.timeout_seconds or 1)
    try:
        if probe.http_get:
            get = probe.http_get
            port = container_port(container, get.port)
            url = f"http://{get.host or address}:{port}/{(get.path or '/').lstrip('/')}"
            limit = aiohttp.ClientTimeout(total=timeout)
            async with (
                aiohttp.ClientSession(timeout=limit) as session,
                session.get(url) as response,
            ):
                return 200 <= response.status < 400
        if probe._exec:
            process = await asyncio.create_subprocess_exec(
                *probe._exec.command,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                return await asyncio.wait_for(process.wait(), timeout) == 0
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                return False
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return False
    raise ValueError("only httpGet and exec readiness probes are supported")


async def watch_readiness(
    probe: client.V1Probe,
    container: client.V1Container,
    env: dict[str, str],
    address: str,
    report: Callable[[bool], Awaitable[None]],
) -> None:
    """Runs the probe every periodSeconds and reports each change of readiness, honouring
    initialDelaySeconds, successThreshold and failureThreshold, until cancelled."""
    await asyncio.sleep(probe.initial_delay_seconds or 0)
    ready, passes, failures = False, 0, 0
    while True:
        if await check(probe, container, env, address):
            passes, failures = passes + 1, 0
        else:
            passes, failures = 0, failures + 1
        if not ready and passes >= (probe.success_threshold or 1):
            ready = True
            await report(True)
        elif ready and failures >= (probe.failure_threshold or 3):
            ready = False
            await report(False)
        await asyncio.sleep(probe.period_seconds or 10)
