"""Liveness, readiness (every backing service answers) and metrics."""

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from diffleet_api.deps import RuntimeDep
from diffleet_api.metrics import REGISTRY
from diffleet_api.runtime import Runtime

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


async def check_database(runtime: Runtime) -> None:
    async with runtime.pool.connection() as connection:
        await connection.execute("select 1")


async def check_broker(runtime: Runtime) -> None:
    await runtime.broker.queue_depth(runtime.platform.topology.results_queue)


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


async def outcome(check: Callable[[Runtime], Awaitable[None]], runtime: Runtime) -> str:
    try:
        await asyncio.wait_for(check(runtime), runtime.settings.request_timeout_seconds)
    except Exception as error:  # noqa: BLE001 - any failure makes the service not ready
        return f"failed: {error!r}"[:300]
    return "ok"


@router.get("/readyz", responses={503: {"model": Readiness, "description": "Not ready"}})
async def readyz(runtime: RuntimeDep, response: Response) -> Readiness:
    """Ready when Kubernetes, PostgreSQL, RabbitMQ and S3 all answer."""
    results = await asyncio.gather(*(outcome(check, runtime) for check in CHECKS.values()))
    checks = dict(zip(CHECKS, results, strict=True))
    ready = all(result == "ok" for result in results)
    if not ready:
        response.status_code = 503
    return Readiness(status="ready" if ready else "not ready", checks=checks)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
