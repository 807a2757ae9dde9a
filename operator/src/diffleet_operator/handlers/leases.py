"""Worker Leases: the fleet's inventory and liveness."""

from datetime import datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from diffleet_core.fleet import INVENTORY_ANNOTATION, WORKER_LABEL, WorkerInventory
from diffleet_operator import lifecycle
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
        return
    spec = body.get("spec", {})
    try:
        inventory = WorkerInventory.model_validate_json(
            body["metadata"].get("annotations", {}).get(INVENTORY_ANNOTATION, "")
        )
        renewed = datetime.fromisoformat(spec["renewTime"])
        duration = float(spec["leaseDurationSeconds"])
    except (ValidationError, KeyError, ValueError, TypeError) as error:
        kopf.warn(body, reason="InvalidLease", message=f"worker Lease not understood: {error}")
        return
    rt.fleet.upsert(inventory, renewed + timedelta(seconds=duration))
