"""GPUPools: the pool index (diffleet_operator.cache.pools) of this operator's fleet
(cache.pools.fleet_of); the pools of other fleets are left alone.

Their finalizer is the pool controller's (autoscaler/controller.py), not kopf's: kopf
removes its finalizer from every object its deletion handler does not match, which would
release the pools of another fleet."""

from typing import Any

import kopf
from pydantic import ValidationError

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import gpu_pool
from diffleet_operator.cache.pools import PoolRecord, fleet_of
from diffleet_operator.quarantine import Loop
from diffleet_operator.runtime import Runtime

RESOURCE = (API_GROUP, API_VERSION, gpu_pool.PLURAL)


@kopf.on.event(*RESOURCE)
async def track_pool(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keeps the pool index in step and asks the autoscaler for a round. A GPUPool whose
    spec cannot be read (the CRD refuses such specs) is quarantined and left alone."""
    rt = Runtime.of(memo)
    meta = body["metadata"]
    if event["type"] == "DELETED" or fleet_of(body) != rt.operator.fleet_namespace:
        rt.pools.remove(meta["name"])
        rt.quarantine.forget(meta["uid"])
    else:
        try:
            rt.pools.upsert(PoolRecord.of(body))
        except ValidationError as error:
            rt.quarantine.resource_failed(Loop.GPU_POOLS, body, error)
            return
    rt.autoscaler.trigger()
