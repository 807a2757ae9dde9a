"""Rate limits per tenant, shared by every API replica: the token buckets live in
PostgreSQL, each taken under a row lock and timed by the database's clock."""

from typing import Any

import psycopg

from diffleet_api.buckets import BucketPolicy, Decision, take
from diffleet_api.db import Pool
from diffleet_api.errors import RateLimitedError
from diffleet_api.settings import TierLimits

REQUESTS = "requests"
GENERATIONS = "generations"
UPLOADS = "uploads"


def policy(limits: TierLimits, bucket: str) -> BucketPolicy | None:
    """The bucket's policy for a tier; None when the tier is unlimited there."""
    per_window = {
        REQUESTS: (limits.requests_per_minute, 60.0),
        GENERATIONS: (limits.generations_per_hour, 3600.0),
        UPLOADS: (limits.uploads_per_hour, 3600.0),
    }
    capacity, window = per_window[bucket]
    return None if capacity is None else BucketPolicy(bucket, capacity, window)


async def consume(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, rule: BucketPolicy, cost: int
) -> Decision:
    """Takes `cost` tokens from the tenant's bucket (committed at once)."""
    async with connection.transaction():
        await connection.execute(
            "insert into rate_buckets (tenant_id, name, tokens, updated_at)"
            " values (%s, %s, %s, clock_timestamp()) on conflict do nothing",
            (tenant_id, rule.name, float(rule.capacity)),
        )
        cursor = await connection.execute(
            "select tokens, extract(epoch from clock_timestamp() - updated_at)"
            " from rate_buckets where tenant_id = %s and name = %s for update",
            (tenant_id, rule.name),
        )
        row = await cursor.fetchone()
        assert row is not None
        decision = take(rule, float(row[0]), float(row[1]), cost)
        await connection.execute(
            "update rate_buckets set tokens = %s, updated_at = clock_timestamp()"
            " where tenant_id = %s and name = %s",
            (decision.tokens, tenant_id, rule.name),
        )
    return decision


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


async def enforce(pool: Pool, tenant_id: str, limits: TierLimits, bucket: str, cost: int) -> None:
    """Takes `cost` tokens of the tier's `bucket` (unlimited: nothing), or raises 429."""
    rule = policy(limits, bucket)
    if rule is None:
        return
    async with pool.connection() as connection:
        decision = await consume(connection, tenant_id, rule, cost)
    if not decision.allowed:
        raise refusal(rule, decision)
