"""The API's one-statement writes against the real PostgreSQL: taking rate-limit tokens
(agrees with the bucket arithmetic, never grants a token twice), authenticating (the
caller, a request token and what the generations bucket holds, in one statement) and
reserving credits with their generation tokens (all or nothing, never spends a balance
or a token twice)."""

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import pytest

from diffleet_api import db, ledger, ratelimits, tenants
from diffleet_api.buckets import BucketPolicy, Decision, take
from diffleet_api.errors import PaymentRequiredError, RateLimitedError, UnavailableError
from diffleet_api.tokens import Role
from diffleet_core.resources.generation_job import Tier
from tests.api.support import connect

T = TypeVar("T")
MINUTE = BucketPolicy("requests", capacity=5, window_seconds=60)
HOUR = BucketPolicy("generations", capacity=10, window_seconds=3600)


@pytest.fixture
def tenant_id(local_stack: dict[str, str]) -> str:
    """A tenant with 10 credits (no namespace is created: only its rows are used)."""
    db.migrate(os.environ["DIFFLEET_DATABASE_URL"])
    name = f"stmt-{uuid.uuid4().hex[:8]}"
    with connect() as connection:
        tenants.create_tenant(connection, name, name, Tier.FREE, Decimal(10))
    return name


async def on_connection(
    work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
) -> T:
    """Runs `work` on a connection of its own, in autocommit as the API's pool has them."""
    async with await psycopg.AsyncConnection.connect(
        os.environ["DIFFLEET_DATABASE_URL"], autocommit=True, connect_timeout=5
    ) as connection:
        return await work(connection)


def consume(tenant: str, rule: BucketPolicy, cost: int = 1) -> Decision:
    return asyncio.run(on_connection(lambda c: ratelimits.consume(c, tenant, rule, cost)))


def set_bucket(tenant: str, rule: BucketPolicy, tokens: float, seconds_ago: float) -> None:
    with connect() as connection:
        connection.execute(
            "insert into rate_buckets (tenant_id, name, tokens, updated_at)"
            " values (%s, %s, %s, clock_timestamp() - make_interval(secs => %s))"
            " on conflict (tenant_id, name) do update"
            " set tokens = excluded.tokens, updated_at = excluded.updated_at",
            (tenant, rule.name, tokens, seconds_ago),
        )


def stored_tokens(tenant: str, rule: BucketPolicy) -> float:
    with connect() as connection:
        row = connection.execute(
            "select tokens from rate_buckets where tenant_id = %s and name = %s",
            (tenant, rule.name),
        ).fetchone()
    assert row is not None
    return float(row[0])


def test_a_new_bucket_starts_full_and_is_taken_until_empty(tenant_id: str) -> None:
    decisions = [consume(tenant_id, MINUTE) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    refused = consume(tenant_id, MINUTE)
    assert not refused.allowed
    assert refused.remaining == 0
    assert 1 <= refused.retry_after_seconds <= 12  # one token per 12 s
    # One token per 12 s: a few statements later the bucket has refilled a little.
    assert stored_tokens(tenant_id, MINUTE) == pytest.approx(0, abs=0.05)


@pytest.mark.parametrize(
    ("tokens", "seconds_ago", "cost"),
    [(0, 1800, 1), (0, 1800, 6), (3.5, 0, 3), (3.5, 0, 4), (9, 7200, 10), (2, 360, 3)],
)
def test_the_statement_agrees_with_the_bucket_arithmetic(
    tenant_id: str, tokens: float, seconds_ago: float, cost: int
) -> None:
    set_bucket(tenant_id, HOUR, tokens, seconds_ago)
    expected = take(HOUR, tokens, seconds_ago, cost)
    decision = consume(tenant_id, HOUR, cost)
    assert decision.allowed == expected.allowed
    assert decision.remaining == expected.remaining
    assert decision.retry_after_seconds == expected.retry_after_seconds
    assert stored_tokens(tenant_id, HOUR) == pytest.approx(
        expected.tokens if expected.allowed else tokens, abs=0.01
    )


def test_a_cost_above_the_capacity_is_refused_for_the_whole_window(tenant_id: str) -> None:
    refused = consume(tenant_id, MINUTE, cost=6)
    assert not refused.allowed
    assert refused.retry_after_seconds == 60
    assert refused.remaining == 5


def test_concurrent_takes_never_grant_a_token_twice(tenant_id: str) -> None:
    async def race() -> list[Decision]:
        return await asyncio.gather(
            *(on_connection(lambda c: ratelimits.consume(c, tenant_id, HOUR, 1)) for _ in range(25))
        )

    decisions = asyncio.run(race())
    assert sum(d.allowed for d in decisions) == 10
    assert stored_tokens(tenant_id, HOUR) == pytest.approx(0, abs=0.01)


def authenticate(key: str, capacities: dict[str, int]) -> tenants.KeyGrant | None:
    return asyncio.run(on_connection(lambda c: tenants.authenticate_key(c, key, capacities)))


def test_authenticating_a_key_takes_a_request_token_of_its_tenant(tenant_id: str) -> None:
    with connect() as connection:
        key_id, key = tenants.create_key(connection, tenant_id, "k", Role.MEMBER)
    grants = [authenticate(key, {"free": 3}) for _ in range(4)]
    assert all(grant is not None for grant in grants)
    first = grants[0]
    assert first is not None
    assert (first.key_id, first.role, first.caller.tenant.id) == (key_id, Role.MEMBER, tenant_id)
    assert first.caller.balance == Decimal(10)
    lefts = [grant.caller.requests_left for grant in grants if grant is not None]
    assert lefts[:3] == [
        pytest.approx(2, abs=0.01),
        pytest.approx(1, abs=0.01),
        pytest.approx(0, abs=0.01),
    ]
    assert lefts[3] is None  # the bucket is empty: refused

    with connect() as connection:
        assert tenants.revoke_key(connection, key_id)
    set_bucket(tenant_id, MINUTE, 2, 0)
    assert authenticate(key, {"free": 3}) is None
    assert stored_tokens(tenant_id, MINUTE) == 2  # a revoked key takes nothing


def test_a_tier_without_a_request_limit_takes_no_token(tenant_id: str) -> None:
    async def jwt_caller(connection: psycopg.AsyncConnection[Any]) -> tenants.Caller | None:
        return await tenants.authenticate_tenant(connection, tenant_id, {"pro": 500})

    caller = asyncio.run(on_connection(jwt_caller))
    assert caller is not None
    assert caller.tenant.id == tenant_id
    assert caller.requests_left is None
    assert caller.generations is None  # never written
    with connect() as connection:
        bucket = connection.execute(
            "select 1 from rate_buckets where tenant_id = %s", (tenant_id,)
        ).fetchone()
    assert bucket is None


def reservation(cost: str) -> ledger.Reservation:
    uid = str(uuid.uuid4())
    return ledger.Reservation(
        uid=uid,
        namespace="ns",
        name=f"gj-{uid[:8]}",
        spec={"model": "m", "prompt": "p"},
        cost=Decimal(cost),
        created_at="2026-11-24T10:00:00Z",
    )


def test_authenticating_reads_the_generations_bucket_and_takes_nothing(tenant_id: str) -> None:
    with connect() as connection:
        _, key = tenants.create_key(connection, tenant_id, "k", Role.MEMBER)
    fresh = authenticate(key, {})
    assert fresh is not None
    assert fresh.caller.generations is None
    assert ratelimits.available(HOUR, fresh.caller.generations) == 10  # never written: full
    set_bucket(tenant_id, HOUR, 2, 720)  # 2 tokens 12 minutes ago: 2 more came back since
    read = authenticate(key, {})
    assert read is not None
    assert read.caller.generations is not None
    assert read.caller.generations.tokens == 2
    assert ratelimits.available(HOUR, read.caller.generations) == pytest.approx(4, abs=0.01)
    assert stored_tokens(tenant_id, HOUR) == 2


def reserve(
    tenant: str, jobs: list[ledger.Reservation], tokens: BucketPolicy | None = None
) -> Decimal:
    return asyncio.run(on_connection(lambda c: ledger.reserve(c, tenant, jobs, tokens)))


def balance_ledger_and_jobs(tenant: str) -> tuple[Decimal, Decimal, int]:
    with connect() as connection:
        row = connection.execute(
            "select balance, (select sum(amount) from ledger where tenant_id = t.id),"
            " (select count(*) from jobs where tenant_id = t.id and credits = 'reserved')"
            " from tenants t where id = %s",
            (tenant,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_a_reservation_debits_and_records_every_job_or_nothing(tenant_id: str) -> None:
    jobs = [reservation("3"), reservation("4.5")]
    assert reserve(tenant_id, jobs) == Decimal("2.5")
    assert balance_ledger_and_jobs(tenant_id) == (Decimal("2.5"), Decimal("2.5"), 2)
    with connect() as connection:
        history = connection.execute(
            "select name, spec, cost, created_at from jobs where uid = %s", (jobs[1].uid,)
        ).fetchone()
    assert history is not None
    assert history[0] == jobs[1].name
    assert history[1] == {"model": "m", "prompt": "p"}
    assert history[2] == Decimal("4.5")
    assert history[3] == datetime(2026, 11, 24, 10, tzinfo=UTC)

    with pytest.raises(PaymentRequiredError, match=r"balance is 2\.50"):
        reserve(tenant_id, [reservation("1"), reservation("2")])
    assert balance_ledger_and_jobs(tenant_id) == (Decimal("2.5"), Decimal("2.5"), 2)


def reservations_won(
    tenant: str, cost: str, tokens: BucketPolicy | None, refusal: type[Exception], count: int
) -> int:
    """How many of `count` concurrent one-job reservations (each on its own connection)
    went through; the others must fail with `refusal`."""

    async def attempt(connection: psycopg.AsyncConnection[Any]) -> bool:
        try:
            await ledger.reserve(connection, tenant, [reservation(cost)], tokens)
        except refusal:
            return False
        return True

    async def race() -> list[bool]:
        return await asyncio.gather(*(on_connection(attempt) for _ in range(count)))

    return sum(asyncio.run(race()))


def test_concurrent_reservations_never_spend_the_balance_twice(tenant_id: str) -> None:
    assert reservations_won(tenant_id, "3", None, PaymentRequiredError, count=12) == 3
    assert balance_ledger_and_jobs(tenant_id) == (Decimal(1), Decimal(1), 3)


def test_a_reservation_takes_a_generation_token_per_job_or_nothing(tenant_id: str) -> None:
    set_bucket(tenant_id, HOUR, 3, 0)
    assert reserve(tenant_id, [reservation("1"), reservation("1")], HOUR) == Decimal(8)
    assert stored_tokens(tenant_id, HOUR) == pytest.approx(1, abs=0.01)

    with pytest.raises(RateLimitedError, match="generations") as refused:
        reserve(tenant_id, [reservation("1"), reservation("1")], HOUR)
    assert int(refused.value.headers["Retry-After"]) > 60
    assert balance_ledger_and_jobs(tenant_id) == (Decimal(8), Decimal(8), 2)

    with pytest.raises(PaymentRequiredError):
        reserve(tenant_id, [reservation("9")], HOUR)
    assert stored_tokens(tenant_id, HOUR) == pytest.approx(1, abs=0.01)  # given back
    assert balance_ledger_and_jobs(tenant_id) == (Decimal(8), Decimal(8), 2)


def test_concurrent_reservations_never_take_a_generation_token_twice(tenant_id: str) -> None:
    set_bucket(tenant_id, HOUR, 4, 0)
    assert reservations_won(tenant_id, "1", HOUR, RateLimitedError, count=12) == 4
    assert balance_ledger_and_jobs(tenant_id) == (Decimal(6), Decimal(6), 4)
    assert stored_tokens(tenant_id, HOUR) == pytest.approx(0, abs=0.01)


def recorded_by_watcher(tenant: str, job: ledger.Reservation, seconds_ago: float) -> None:
    """The history row the job watcher writes when it sees a job (no credits yet)."""
    with connect() as connection:
        connection.execute(
            "insert into jobs (uid, tenant_id, namespace, name, spec, created_at)"
            " values (%s, %s, %s, %s, '{}', now() - make_interval(secs => %s))",
            (job.uid, tenant, job.namespace, job.name, seconds_ago),
        )


def abandon(uids: list[str], grace_seconds: float) -> list[tuple[str, str]]:
    return asyncio.run(on_connection(lambda c: ledger.abandon(c, uids, grace_seconds)))


def test_only_old_unreserved_jobs_are_abandoned_and_then_cannot_be_reserved(
    tenant_id: str,
) -> None:
    old, young, paid = reservation("1"), reservation("1"), reservation("1")
    recorded_by_watcher(tenant_id, old, seconds_ago=300)
    recorded_by_watcher(tenant_id, young, seconds_ago=0)
    recorded_by_watcher(tenant_id, paid, seconds_ago=300)
    reserve(tenant_id, [paid])
    assert abandon([old.uid, young.uid, paid.uid], grace_seconds=120) == [("ns", old.name)]

    with pytest.raises(UnavailableError, match="abandoned"):
        reserve(tenant_id, [young, old])
    assert balance_ledger_and_jobs(tenant_id) == (Decimal(9), Decimal(9), 1)
    # Still listed until its deletion is seen, so that a failed delete is tried again.
    assert abandon([old.uid, young.uid], grace_seconds=120) == [("ns", old.name)]
