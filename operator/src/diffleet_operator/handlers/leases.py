"""Worker Leases: the fleet's inventory and liveness (judged by when this operator saw
each Lease change, diffleet_operator.cache.fleet). A Lease that cannot be understood is
quarantined: one Warning Event, log line and count, and the fleet goes on without it."""

import time
from typing import Any

import kopf
from pydantic import ValidationError

from diffleet_core.fleet import INVENTORY_ANNOTATION, WORKER_LABEL, WorkerInventory
from diffleet_operator import lifecycle
from diffleet_operator.quarantine import Loop
from diffleet_operator.runtime import Runtime


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={WORKER_LABEL: "true"})
async def track_worker(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    rt = Runtime.of(memo)
    if namespace != rt.operator.fleet_namespace:
        return
    if event["type"] == "DELETED":
        gone = rt.fleet.remove(name)
        await lifecycle.recover_jobs_of(rt, name, gone.jobs if gone else frozenset())
        await rt.trainings.worker_lost(name)
        return
    now = time.monotonic()
    if event["type"] is None:  # listed, not watched: the watch started or reconnected
        rt.fleet.relisted(now)
    spec = body.get("spec", {})
    try:
        inventory = WorkerInventory.model_validate_json(
            body["metadata"].get("annotations", {}).get(INVENTORY_ANNOTATION, "")
        )
        renewal = str(spec["renewTime"])
        duration = float(spec["leaseDurationSeconds"])
    except (ValidationError, KeyError, ValueError, TypeError) as error:
        rt.quarantine.resource_failed(Loop.WORKER_LEASES, body, error)
        return
    rt.fleet.upsert(inventory, renewal=renewal, duration=duration, now=now)
