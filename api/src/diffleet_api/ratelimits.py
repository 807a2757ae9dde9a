"""Rate limits per tenant, shared by every API replica: the token buckets live in
PostgreSQL and are timed by the database's clock.

Taking tokens is one call of the database function `take_tokens` (migration 0002): an
upsert that refills the bucket and takes `cost` only when enough tokens are there, under
the row lock it holds for the calling statement alone. It returns the tokens left, or
null when refused; the bucket is then read once more for the Retry-After and RateLimit-*
figures (refusals only). A refused take leaves the row as it was, which is the same
bucket: the refill is computed from `updated_at` whenever it is next read.

Where each bucket is taken, so that no bucket costs a round trip of its own on the way
to a success:
- requests: by the statement that authenticates (tenants.py);
- generations: by the statement that reserves the credits of the jobs just created
  (ledger.py). The statement that authenticates reads the bucket's row, so a submission it
  cannot cover is refused before anything is created (`check` below), as a balance is;
  one that a concurrent submission outran is refused by the reservation, and its jobs
  are deleted;
- uploads: by a statement of its own (`enforce`)."""

from dataclasses import dataclass
from typing import Any

import psycopg

from diffleet_api.buckets import BucketPolicy, Decision, denied, granted, refill, take
from diffleet_api.db import Pool
from diffleet_api.errors import RateLimitedError
from diffleet_api.settings import TierLimits

REQUESTS = "requests"
GENERATIONS = "generations"
UPLOADS = "uploads"
REQUESTS_WINDOW_SECONDS = 60.0
HOUR_SECONDS = 3600.0

TAKE = "select take_tokens(%(tenant)s, %(name)s, %(capacity)s, %(rate)s, %(cost)s)"
READ = (
    "select tokens, extract(epoch from clock_timestamp() - updated_at)"
    " from rate_buckets where tenant_id = %s and name = %s"
)


def policy(limits: TierLimits, bucket: str) -> BucketPolicy | None:
    """The bucket's policy for a tier; None when the tier is unlimited there."""
    per_window = {
        REQUESTS: (limits.requests_per_minute, REQUESTS_WINDOW_SECONDS),
        GENERATIONS: (limits.generations_per_hour, HOUR_SECONDS),
        UPLOADS: (limits.uploads_per_hour, HOUR_SECONDS),
    }
    capacity, window = per_window[bucket]
    return None if capacity is None else BucketPolicy(bucket, capacity, window)


@dataclass(frozen=True)
class Stored:
    """A bucket's row: the tokens it held when written, and the seconds since then."""

    tokens: float
    elapsed_seconds: float


def available(rule: BucketPolicy, stored: Stored | None) -> float:
    """The tokens a bucket holds now (one never written is full)."""
    if stored is None:
        return float(rule.capacity)
    return refill(rule, stored.tokens, stored.elapsed_seconds)


async def current(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, limits: TierLimits
) -> list[tuple[BucketPolicy, float]]:
    """Each bucket of the tier with the tokens it holds now."""
    rules = [rule for name in (REQUESTS, GENERATIONS, UPLOADS) if (rule := policy(limits, name))]
    cursor = await connection.execute(
        "select name, tokens, extract(epoch from clock_timestamp() - updated_at)"
        " from rate_buckets where tenant_id = %s",
        (tenant_id,),
    )
    stored = {str(row[0]): Stored(float(row[1]), float(row[2])) for row in await cursor.fetchall()}
    return [(rule, available(rule, stored.get(rule.name))) for rule in rules]


async def consume(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, rule: BucketPolicy, cost: int
) -> Decision:
    """Takes `cost` tokens from the tenant's bucket (committed at once: the connection
    is in autocommit, or the caller commits)."""
    cursor = await connection.execute(
        TAKE,
        {
            "tenant": tenant_id,
            "name": rule.name,
            "capacity": float(rule.capacity),
            "rate": rule.rate,
            "cost": float(cost),
        },
    )
    row = await cursor.fetchone()
    if row is not None and row[0] is not None:
        return granted(rule, float(row[0]))
    return await refused(connection, tenant_id, rule, cost)


async def refused(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, rule: BucketPolicy, cost: int
) -> Decision:
    """The refusal, with the bucket as it is now (a bucket never written is full)."""
    cursor = await connection.execute(READ, (tenant_id, rule.name))
    row = await cursor.fetchone()
    stored = Stored(float(row[0]), float(row[1])) if row else None
    return denied(rule, available(rule, stored), cost)


def headers(rule: BucketPolicy, decision: Decision) -> dict[str, str]:
    """RateLimit-* headers (IETF httpapi-ratelimit-headers), plus Retry-After when refused."""
    found = {
        "RateLimit-Limit": str(rule.capacity),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_seconds),
        "RateLimit-Policy": f"{rule.capacity};w={int(rule.window_seconds)};name={rule.name}",
    }
    if not decision.allowed:
        found["Retry-After"] = str(decision.retry_after_seconds)
    return found


def refusal(rule: BucketPolicy, decision: Decision) -> RateLimitedError:
    window = "minute" if rule.window_seconds == 60 else "hour"
    return RateLimitedError(
        f"{rule.name}: at most {rule.capacity} per {window} for this tier;"
        f" retry in {decision.retry_after_seconds}s",
        headers=headers(rule, decision),
    )


def check(rule: BucketPolicy | None, tokens: float | None, cost: int) -> None:
    """429 when a bucket that held `tokens` (as read earlier, no lock: the take decides)
    cannot give `cost`; `rule` None: an unlimited tier."""
    if rule is None or tokens is None:
        return
    decision = take(rule, tokens, 0.0, cost)
    if not decision.allowed:
        raise refusal(rule, decision)


async def enforce(pool: Pool, tenant_id: str, limits: TierLimits, bucket: str, cost: int) -> None:
    """Takes `cost` tokens of the tier's `bucket` (unlimited: nothing), or raises 429."""
    rule = policy(limits, bucket)
    if rule is None:
        return
    async with pool.connection() as connection:
        decision = await consume(connection, tenant_id, rule, cost)
    if not decision.allowed:
        raise refusal(rule, decision)
