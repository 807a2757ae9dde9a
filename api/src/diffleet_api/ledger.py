"""The credit ledger: every change of a balance is a row, so balance = sum(amount).

    reserve  -cost   on submit, once the job is created (402 when short)
    settle    0      when the job succeeds (the reservation becomes the charge)
    refund   +cost   when the job fails or is cancelled

Settle and refund happen once per job: the job's `credits` column moves from reserved to
settled or refunded under a row lock, and the ledger has one entry per job and kind.
"""

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
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


def affordable(balance: Decimal, cost: Decimal) -> None:
    """402 when `balance` (as read earlier, no lock: `reserve` decides) is short of `cost`,
    before anything is created."""
    if balance < cost:
        raise short(cost, balance)


@dataclass(frozen=True)
class Reservation:
    """A job's credits, held at submission, and what the job history records of it."""

    uid: str
    namespace: str
    name: str
    spec: dict[str, Any]
    cost: Decimal
    created_at: str
    """The resource's creationTimestamp (RFC 3339)."""


# One statement, so one transaction and one round trip: the balance is reduced only when
# it covers the total (the row lock is held for this statement alone, so a tenant's
# concurrent submissions never spend the same credits twice), and only then is each job's
# `reserve` ledger row and history row written (the watcher may have recorded the job
# first: its row then takes the reservation).
RESERVE = """
with debit as (
    update tenants set balance = balance - %(total)s
    where id = %(tenant)s and balance >= %(total)s
    returning id, balance
), job as (
    select * from jsonb_to_recordset(%(jobs)s)
        as job (uid text, namespace text, name text, spec jsonb, cost numeric,
            created_at timestamptz)
), entries as (
    insert into ledger (tenant_id, kind, amount, job_uid, note)
    select debit.id, 'reserve', -job.cost, job.uid, 'job ' || job.name from debit, job
), history as (
    insert into jobs (uid, tenant_id, namespace, name, spec, cost, credits, created_at)
    select job.uid, debit.id, job.namespace, job.name, job.spec, job.cost, 'reserved',
        job.created_at
    from debit, job
    on conflict (uid) do update set tenant_id = excluded.tenant_id, cost = excluded.cost,
        credits = 'reserved'
)
select balance from debit
"""


async def reserve(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, jobs: list[Reservation]
) -> Decimal:
    """Takes the jobs' costs from the balance and records them (ledger and history), all
    or nothing; 402 when the balance is short. Returns the balance left."""
    total = sum((job.cost for job in jobs), Decimal(0))
    # The jobs travel as one JSON document (costs as strings, exact): one parameter to
    # encode, where arrays of strings would each be escaped value by value.
    rows = [asdict(job) | {"cost": str(job.cost)} for job in jobs]
    cursor = await connection.execute(
        RESERVE, {"tenant": tenant_id, "total": total, "jobs": Jsonb(rows)}
    )
    row = await cursor.fetchone()
    if row is None:
        raise short(total, await current_balance(connection, tenant_id))
    left: Decimal = row[0]
    return left


def short(cost: Decimal, balance: Decimal) -> PaymentRequiredError:
    return PaymentRequiredError(f"the job costs {cost} credits; the balance is {balance}")


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
