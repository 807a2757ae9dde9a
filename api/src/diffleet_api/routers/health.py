"""Liveness, readiness (every backing service answers) and metrics."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from diffleet_api.deps import RuntimeDep
from diffleet_api.metrics import REGISTRY
from diffleet_api.runtime import Runtime

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


CheckResult = Literal["ok", "failed"]


class Readiness(BaseModel):
    status: str
    checks: dict[str, CheckResult]


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


async def check_database(runtime: Runtime) -> None:
    async with runtime.pool.connection() as connection:
        await connection.execute("select 1")


async def check_broker(runtime: Runtime) -> None:
    """Both connections: the broker's and the event streams' (each reconnects alone)."""
    await runtime.broker.queue_depth(runtime.platform.topology.results_queue)
    await runtime.amqp.ready()


async def check_s3(runtime: Runtime) -> None:
    await asyncio.to_thread(runtime.s3.head_bucket, Bucket=runtime.platform.buckets.uploads)


async def check_kubernetes(runtime: Runtime) -> None:
    await runtime.kube.check()


CHECKS: dict[str, Callable[[Runtime], Awaitable[None]]] = {
    "kubernetes": check_kubernetes,
    "database": check_database,
    "rabbitmq": check_broker,
    "s3": check_s3,
}


async def outcome(name: str, runtime: Runtime) -> CheckResult:
    """Runs one check: "ok" or "failed". Why it failed goes to the log only: /readyz
    answers anonymous callers."""
    try:
        await asyncio.wait_for(CHECKS[name](runtime), runtime.settings.request_timeout_seconds)
    except Exception as error:  # noqa: BLE001 - any failure makes the service not ready
        logger.warning("readiness check %s failed: %r", name, error)
        return "failed"
    return "ok"


@router.get("/readyz", responses={503: {"model": Readiness, "description": "Not ready"}})
async def readyz(runtime: RuntimeDep, response: Response) -> Readiness:
    """Ready when Kubernetes, PostgreSQL, RabbitMQ and S3 all answer; each check is "ok"
    or "failed" (the reason is in the API's log)."""
    results = await asyncio.gather(*(outcome(name, runtime) for name in CHECKS))
    checks = dict(zip(CHECKS, results, strict=True))
    ready = all(result == "ok" for result in results)
    if not ready:
        response.status_code = 503
    return Readiness(status="ready" if ready else "not ready", checks=checks)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
