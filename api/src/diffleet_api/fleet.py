"""The fleet as the platform's operators see it (GET /v1/fleet): the GPUPools with the
status the operator writes, the autoscaler's recent decisions (the pools' Events), the
workers as their Leases announce them, the platform's ModelCaches with their hot and warm
counts, and the jobs queued by tier from the job history. Nothing of a tenant's work: no
job, prompt or namespace of a tenant is read here, only counts."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from diffleet_api.history import readable
from diffleet_api.kube import Body
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import Fleet, FleetModel, PoolPublic, ScalingDecision, WorkerPublic
from diffleet_core.fleet import INVENTORY_ANNOTATION, WorkerInventory
from diffleet_core.resources.generation_job import Tier
from diffleet_core.resources.gpu_pool import (
    FLEET_LABEL,
    SCALED_DOWN,
    SCALED_UP,
    GPUPoolSpec,
    GPUPoolStatus,
)
from diffleet_core.resources.model_cache import ModelCacheStatus, ModelType

# Decisions listed at most.
DECISIONS = 20
QUEUED_BY_TIER = "select status->>'tier', count(*) from jobs where phase = 'Queued' group by 1"


async def fleet(runtime: Runtime) -> Fleet:
    system = runtime.platform.system_namespace
    pool_bodies, model_bodies, queued, events = await asyncio.gather(
        runtime.kube.list_pool_bodies(),
        runtime.kube.list_models(system),
        queued_by_tier(runtime),
        runtime.kube.list_pool_events(),
    )
    pools = [pool(body, system) for body in pool_bodies]
    namespaces = sorted({system} | {found.fleet_namespace for found in pools})
    leases = await asyncio.gather(*(runtime.kube.list_worker_leases(n) for n in namespaces))
    return Fleet(
        pools=pools,
        workers=[worker(body) for listed in leases for body in listed],
        models=[model(body) for body in model_bodies],
        queued=queued,
        decisions=decisions(events),
    )


def decisions(events: list[Body]) -> list[ScalingDecision]:
    """The latest `DECISIONS` ScaledUp/ScaledDown Events, newest first."""
    found = [
        ScalingDecision(
            pool=event["involvedObject"]["name"],
            reason=event["reason"],
            message=event.get("message") or "",
            at=moment(event.get("lastTimestamp") or event.get("eventTime")),
        )
        for event in events
        if event.get("reason") in (SCALED_UP, SCALED_DOWN)
    ]
    oldest = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda decision: decision.at or oldest, reverse=True)
    return found[:DECISIONS]


def pool(body: Body, system_namespace: str) -> PoolPublic:
    meta = body["metadata"]
    spec, spec_errors = readable(GPUPoolSpec, body.get("spec"), "spec")
    status, status_errors = readable(GPUPoolStatus, body.get("status") or {}, "status")
    return PoolPublic(
        name=meta["name"],
        fleet_namespace=(meta.get("labels") or {}).get(FLEET_LABEL) or system_namespace,
        spec=spec,
        status=status or GPUPoolStatus(),
        invalid_fields=spec_errors + status_errors,
    )


def worker(body: Body) -> WorkerPublic:
    meta, spec = body["metadata"], body.get("spec") or {}
    renewed = moment(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    expires = renewed + timedelta(seconds=duration) if renewed and duration else None
    found = inventory((meta.get("annotations") or {}).get(INVENTORY_ANNOTATION))
    return WorkerPublic(
        id=meta["name"],
        namespace=meta["namespace"],
        renewed_at=renewed,
        expires_at=expires,
        inventory=found,
        load=len(found.jobs_in_flight) / found.concurrency if found else None,
    )


def inventory(annotation: str | None) -> WorkerInventory | None:
    """The worker's announcement, or None when it is absent or unreadable (the operator
    does not place work on such a worker either)."""
    if annotation is None:
        return None
    try:
        return WorkerInventory.model_validate_json(annotation)
    except ValidationError:
        return None


def moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def model(body: Body) -> FleetModel:
    status, _ = readable(ModelCacheStatus, body.get("status") or {}, "status")
    kind = (body.get("spec") or {}).get("type")
    return FleetModel(
        id=body["metadata"]["name"],
        type=kind if kind in set(ModelType) else None,
        status=status or ModelCacheStatus(),
    )


async def queued_by_tier(runtime: Runtime) -> dict[Tier, int]:
    async with runtime.pool.connection() as connection:
        cursor = await connection.execute(QUEUED_BY_TIER)
        rows = await cursor.fetchall()
    return {Tier(tier): count for tier, count in rows if tier in set(Tier)}
