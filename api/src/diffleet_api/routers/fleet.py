"""The fleet, for the platform role only (not a tenant's: a tenant admin is 403)."""

from fastapi import APIRouter

from diffleet_api import fleet
from diffleet_api.deps import Platform, RuntimeDep
from diffleet_api.errors import PROBLEM_RESPONSES
from diffleet_api.schemas import Fleet

router = APIRouter(prefix="/v1/fleet", tags=["fleet"], responses=PROBLEM_RESPONSES)


@router.get("")
async def get_fleet(_: Platform, runtime: RuntimeDep) -> Fleet:
    """GPUPools (spec; status: replicas, ready, busy, desired, queuedJobs, lastScaleTime,
    conditions), workers (their Leases' inventory and load), the platform's ModelCaches
    (hot and warm counts) and the jobs queued by tier (job history). Platform keys only
    (`diffleet-admin platform-keys create`); any tenant's credential is 403."""
    return await fleet.fleet(runtime)
