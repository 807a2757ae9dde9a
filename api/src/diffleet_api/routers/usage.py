"""A tenant's credits: balance, reservations and the ledger; its rate-limit buckets."""

import math
from typing import Annotated

from fastapi import APIRouter, Query

from diffleet_api import ledger, ratelimits
from diffleet_api.deps import RuntimeDep, Viewer
from diffleet_api.errors import PROBLEM_RESPONSES
from diffleet_api.schemas import RateLimitState, Usage

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=PROBLEM_RESPONSES)


@router.get("")
async def usage(
    principal: Viewer,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Ledger entries")] = 50,
) -> Usage:
    tenant = principal.tenant
    async with runtime.pool.connection() as connection:
        balance = await ledger.current_balance(connection, tenant.id)
        reserved = await ledger.reserved_total(connection, tenant.id)
        entries = await ledger.entries(connection, tenant.id, limit)
        buckets = await ratelimits.current(
            connection, tenant.id, runtime.settings.tier_limits[tenant.tier]
        )
    return Usage(
        tenant=tenant.id,
        tier=tenant.tier,
        balance=balance,
        reserved=reserved,
        ledger=entries,
        rate_limits=[
            RateLimitState(
                name=rule.name,
                limit=rule.capacity,
                remaining=math.floor(tokens),
                window_seconds=rule.window_seconds,
            )
            for rule, tokens in buckets
        ],
    )
