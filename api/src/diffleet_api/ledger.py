"""The credit ledger: every change of a balance is a row, so balance = sum(amount).

    reserve  -cost   on submit, once the job is created (402 when short; the job's
                     generation token is taken with it)
    settle    0      when the job succeeds (the reservation becomes the charge)
    refund   +cost   when the job fails or is cancelled

A job the API created but did not reserve for within the job watcher's grace is
`abandoned` (no ledger row) and deleted.

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
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from diffleet_api import ratelimits
from diffleet_api.buckets import BucketPolicy
from diffleet_api.errors import PaymentRequiredError, UnavailableError

Outcome = Literal["settle", "refund"]
ABANDONED = "DF409"  # SQLSTATE of reserve_jobs when the watcher abandoned a job first


class LedgerEntry(BaseModel):
    """One row of the ledger, camelCase on the wire like every response."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

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


# One call of the database function `reserve_jobs` (migration 0003): the generation
# tokens taken, the balance debited, the ledger and history rows written, all or nothing.
RESERVE = (
    "select outcome, balance_left from reserve_jobs("
    "%(tenant)s, %(total)s, %(jobs)s, %(bucket)s, %(capacity)s, %(rate)s)"
)


async def reserve(
    connection: psycopg.AsyncConnection[Any],
    tenant_id: str,
    jobs: list[Reservation],
    tokens: BucketPolicy | None,
) -> Decimal:
    """Takes a token per job from the tenant's `tokens` bucket (None: an unlimited tier)
    and the jobs' costs from the balance, and records them (ledger and history), all or
    nothing; 429 when the bucket is short, 402 when the balance is, 503 when the job
    watcher abandoned the jobs first (the submission took longer than its grace).
    Returns the balance left."""
    total = sum((job.cost for job in jobs), Decimal(0))
    # The jobs travel as one JSON document (costs as strings, exact): one parameter to
    # encode, where arrays of strings would each be escaped value by value.
    rows = [asdict(job) | {"cost": str(job.cost)} for job in jobs]
    parameters = reserve_parameters(tenant_id, total, rows, tokens)
    try:
        cursor = await connection.execute(RESERVE, parameters)
    except psycopg.Error as error:
        if error.sqlstate == ABANDONED:
            raise UnavailableError(
                "the submission took too long: its jobs were abandoned and deleted; retry it"
            ) from error
        raise
    row = await cursor.fetchone()
    assert row is not None, "reserve_jobs returns one row"
    outcome, balance = row
    if outcome == "rate_limited":
        assert tokens is not None
        decision = await ratelimits.refused(connection, tenant_id, tokens, len(jobs))
        raise ratelimits.refusal(tokens, decision)
    if outcome == "short":
        raise short(total, balance)
    left: Decimal = balance
    return left


def reserve_parameters(
    tenant_id: str, total: Decimal, rows: list[dict[str, Any]], tokens: BucketPolicy | None
) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "total": total,
        "jobs": Jsonb(rows),
        "bucket": tokens.name if tokens else None,
        "capacity": float(tokens.capacity) if tokens else None,
        "rate": tokens.rate if tokens else None,
    }


# The jobs the API created that are still without a reservation once older than the grace
# (or abandoned already, their deletion not seen yet): marked abandoned, so that a late
# reservation fails (migration 0003), and returned to be deleted.
ABANDON = """
update jobs set credits = 'abandoned'
where uid = any(%(uids)s)
    and (credits = 'abandoned'
        or (credits = 'none' and created_at < now() - make_interval(secs => %(grace)s)))
returning namespace, name
"""


async def abandon(
    connection: psycopg.AsyncConnection[Any], uids: list[str], grace_seconds: float
) -> list[tuple[str, str]]:
    """Of the jobs `uids` (created by the API), those never reserved within
    `grace_seconds` of their creation, as (namespace, name), marked abandoned."""
    cursor = await connection.execute(ABANDON, {"uids": uids, "grace": grace_seconds})
    return [(namespace, name) for namespace, name in await cursor.fetchall()]


VANISHED = """
select job.uid, job.namespace, job.name, job.spec, job.status, job.created_at
from jobs job join ledger entry on entry.job_uid = job.uid and entry.kind = 'reserve'
where job.credits = 'reserved' and entry.created_at < %(before)s
    and (%(namespace)s::text is null or job.namespace = %(namespace)s)
    and not job.uid = any(%(listed)s)
"""


async def vanished(
    connection: psycopg.AsyncConnection[Any],
    namespace: str | None,
    listed: list[str],
    before: datetime,
) -> list[dict[str, Any]]:
    """History rows of jobs (in `namespace`, or all) still reserved though reserved before
    `before` and missing from `listed`, the uids a list taken after `before` returned:
    deleted while no watch saw it."""
    cursor = connection.cursor(row_factory=dict_row)
    await cursor.execute(VANISHED, {"namespace": namespace, "listed": listed, "before": before})
    return await cursor.fetchall()


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
    """Credits held by the tenant's unfinished jobs and trainings."""
    cursor = await connection.execute(
        "select (select coalesce(sum(cost), 0) from jobs"
        "        where tenant_id = %(tenant)s and credits = 'reserved')"
        " + (select coalesce(sum(cost), 0) from trainings"
        "    where tenant_id = %(tenant)s and credits = 'reserved')",
        {"tenant": tenant_id},
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
