"""`diffleet-admin drain` and `resume`: set the operator's dispatch pause
(diffleet_core.dispatch_pause), and wait, polling with a deadline, until no job it serves
is busy (Scheduled or Running). Before an uninstall, the drain also removes the release's
GPUPools while their operator still runs, which drains and deletes their worker pods and
then lifts each pool's finalizer: once the operator is gone, nobody would."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_api.kube import Body, Kube
from diffleet_core.dispatch_pause import BUSY_PHASES, pause_data

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0


async def set_paused(kube: Kube, namespace: str, configmap: str, paused: bool) -> None:
    """Writes the pause into the ConfigMap, creating it when missing (an install without
    the chart's)."""
    body = {"data": pause_data(paused)}
    try:
        await kube.core.patch_namespaced_config_map(
            configmap, namespace, body, _request_timeout=kube.timeout
        )
    except ApiException as error:
        if error.status != 404:
            raise
        created = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=configmap), data=pause_data(paused)
        )
        await kube.core.create_namespaced_config_map(
            namespace, created, _request_timeout=kube.timeout
        )


async def busy_jobs(kube: Kube, job_namespaces: Sequence[str]) -> list[str]:
    """`namespace/name` of every Scheduled or Running job (all namespaces when none given)."""
    listed: list[Body] = []
    targets: list[str | None] = [*job_namespaces] or [None]
    for namespace in targets:
        items, _ = await kube.list_all_jobs(namespace)
        listed += items
    return sorted(
        f"{job['metadata']['namespace']}/{job['metadata']['name']}"
        for job in listed
        if (job.get("status") or {}).get("phase") in BUSY_PHASES
    )


async def until_empty(
    listing: Callable[[], Awaitable[list[str]]], what: str, within: float, poll: float
) -> list[str]:
    """Polls `listing` until it is empty; what it still lists at the deadline ([] once
    empty). A failed poll is tried again on the next one; the last one failing raises."""
    deadline = time.monotonic() + within
    while True:
        try:
            left = await listing()
        except (ApiException, aiohttp.ClientError, TimeoutError) as error:
            if time.monotonic() >= deadline:
                raise
            logger.warning("listing %s failed: %s; trying again", what, error)
        else:
            if not left or time.monotonic() >= deadline:
                return left
        await asyncio.sleep(max(0.0, min(poll, deadline - time.monotonic())))


async def wait_until_idle(
    kube: Kube, job_namespaces: Sequence[str], within: float, poll: float = POLL_SECONDS
) -> list[str]:
    """Polls until no job is busy; the jobs still busy at the deadline ([] once idle)."""
    return await until_empty(
        lambda: busy_jobs(kube, job_namespaces), "GenerationJobs", within, poll
    )


async def remove_pools(
    kube: Kube, selector: str, within: float, poll: float = POLL_SECONDS
) -> list[str]:
    """Deletes the GPUPools matching `selector` and polls until they are gone; the names
    still there at the deadline ([] once all are)."""
    for name in await kube.list_pools(selector):
        await kube.delete_pool(name)
    return await until_empty(lambda: kube.list_pools(selector), "GPUPools", within, poll)
