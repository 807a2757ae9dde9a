"""The credit ledger: every change of a balance is a row, so balance = sum(amount).

    reserve  -cost   on submit, in the transaction that creates the job (402 when short)
    settle    0      when the job succeeds (the reservation becomes the charge)
    refund   +cost   when the job fails or is cancelled

Settle and refund happen once per job: the job's `credits` column moves from reserved to
settled or refunded under a row lock, and the ledger has one entry per job and kind.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from diffleet_api.errors import PaymentRequiredError

Outcome = Literal["settle", "refund"]


class LedgerEntry(BaseModel):
    id: int
    kind: str
    amount: float
    job_uid: str | None
    note: str
    created_at: datetime


async def affordable(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, cost: Decimal
) -> None:
    """402 when the balance is short of `cost`, before anything is created (a read, no
    lock: `reserve` decides)."""
    balance = await current_balance(connection, tenant_id)
    if balance < cost:
        raise short(cost, balance)


async def reserve(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, cost: Decimal
) -> Decimal:
    """Takes `cost` from the balance, in the caller's transaction; 402 when it is short.
    The ledger row is written by `record_reservation` once the job's uid is known."""
    cursor = await connection.execute(
        "update tenants set balance = balance - %s where id = %s and balance >= %s"
        " returning balance",
        (cost, tenant_id, cost),
    )
    row = await cursor.fetchone()
    if row is None:
        raise short(cost, await current_balance(connection, tenant_id))
    left: Decimal = row[0]
    return left


def short(cost: Decimal, balance: Decimal) -> PaymentRequiredError:
    return PaymentRequiredError(f"the job costs {cost} credits; the balance is {balance}")


async def record_reservation(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, uid: str, cost: Decimal, name: str
) -> None:
    await connection.execute(
        "insert into ledger (tenant_id, kind, amount, job_uid, note)"
        " values (%s, 'reserve', %s, %s, %s)",
        (tenant_id, -cost, uid, f"job {name}"),
    )


async def finish(connection: psycopg.AsyncConnection[Any], uid: str, outcome: Outcome) -> bool:
    """Settles or refunds the job's reservation, once; False when there is none open."""
    async with connection.transaction():
        cursor = await connection.execute(
            "select tenant_id, cost, name from jobs"
            " where uid = %s and credits = 'reserved' for update",
            (uid,),
        )
        row = await cursor.fetchone()
        if row is None:
            return False
        tenant_id, cost, name = row
        amount = cost if outcome == "refund" else Decimal(0)
        state = "refunded" if outcome == "refund" else "settled"
        await connection.execute("update jobs set credits = %s where uid = %s", (state, uid))
        await connection.execute(
            "update tenants set balance = balance + %s where id = %s", (amount, tenant_id)
        )
        await connection.execute(
            "insert into ledger (tenant_id, kind, amount, job_uid, note)"
            " values (%s, %s, %s, %s, %s)",
            (tenant_id, outcome, amount, uid, f"job {name}"),
        )
    return True


async def current_balance(connection: psycopg.AsyncConnection[Any], tenant_id: str) -> Decimal:
    cursor = await connection.execute("select balance from tenants where id = %s", (tenant_id,))
    row = await cursor.fetchone()
    balance: Decimal = row[0] if row else Decimal(0)
    return balance


async def reserved_total(connection: psycopg.AsyncConnection[Any], tenant_id: str) -> Decimal:
    cursor = await connection.execute(
        "select coalesce(sum(cost), 0) from jobs where tenant_id = %s and credits = 'reserved'",
        (tenant_id,),
    )
    row = await cursor.fetchone()
    total: Decimal = row[0] if row else Decimal(0)
    return total


async def entries(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, limit: int
) -> list[LedgerEntry]:
    cursor = connection.cursor(row_factory=dict_row)
    await cursor.execute(
        "select id, kind, amount, job_uid, note, created_at from ledger"
        " where tenant_id = %s order by id desc limit %s",
        (tenant_id, limit),
    )
    return [LedgerEntry.model_validate(row) for row in await cursor.fetchall()]


async def ledger_sum(connection: psycopg.AsyncConnection[Any], tenant_id: str) -> Decimal:
    cursor = await connection.execute(
        "select coalesce(sum(amount), 0) from ledger where tenant_id = %s", (tenant_id,)
    )
    row = await cursor.fetchone()
    total: Decimal = row[0] if row else Decimal(0)
    return total
