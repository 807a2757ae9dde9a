"""A tenant's credits: balance, reservations and the ledger."""

from typing import Annotated

from fastapi import APIRouter, Query

from diffleet_api import ledger
from diffleet_api.deps import RuntimeDep, Viewer
from diffleet_api.errors import PROBLEM_RESPONSES
from diffleet_api.schemas import Usage

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
    return Usage(
        tenant=tenant.id, tier=tenant.tier, balance=balance, reserved=reserved, ledger=entries
    )
