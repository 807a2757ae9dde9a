"""Webhook deliveries: the terminal state of a job, POSTed to its spec.webhookUrl.

The body is signed with HMAC-SHA256 under the platform's webhook secret:

    Diffleet-Signature: t=<unix seconds>,v1=<hex hmac of "<t>.<body>">

A receiver recomputes the HMAC over the raw body and refuses old timestamps. Deliveries
live in PostgreSQL; only the watcher's leader sends them, each row taken with
FOR UPDATE SKIP LOCKED, retried with exponential backoff up to a bounded number of
attempts, and every attempt's outcome is recorded on the row. Targets must be public
addresses, checked when connecting (`egress`); a refused target fails the delivery at once.

Each delivery is its own (isolation.py): a POST that makes the HTTP client raise something
other than an HTTP error (a URL it cannot use, such as a port above 65535) is the
delivery's fault, never retried: the delivery is quarantined, failed with the reason, and
the others go on. Errors are stored `storable` (a target's answer may hold U+0000).
"""

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from diffleet_api.egress import refused_target
from diffleet_api.history import storable
from diffleet_api.isolation import Loop, reason, report
from diffleet_api.metrics import WEBHOOK_OLDEST_PENDING_SECONDS, WEBHOOKS, WEBHOOKS_PENDING
from diffleet_api.settings import ApiSettings

SIGNATURE_HEADER = "Diffleet-Signature"
DELIVERY_HEADER = "Diffleet-Delivery"
BATCH = 20

logger = logging.getLogger(__name__)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, tolerance_seconds: int, now: float) -> bool:
    """What a receiver does (and the tests): the signature matches and is recent."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    fresh = abs(now - timestamp) <= tolerance_seconds
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def backoff(settings: ApiSettings, attempts: int) -> float:
    """Delay before the next attempt, after `attempts` failed ones."""
    delay: float = settings.webhook_backoff_seconds * 2 ** max(0, attempts - 1)
    return min(settings.webhook_backoff_max_seconds, delay)


async def enqueue(
    connection: psycopg.AsyncConnection[Any],
    namespace: str,
    uid: str,
    url: str,
    payload: dict[str, Any],
    failure: str | None = None,
) -> None:
    """Records a delivery to make, once per job; with a `failure`, one that has failed
    already for that reason (the watcher quarantined its job) and is never sent."""
    await connection.execute(
        "insert into webhook_deliveries (namespace, job_uid, url, payload, state, last_error)"
        " values (%s, %s, %s, %s, %s, %s) on conflict (job_uid) do nothing",
        (
            namespace,
            uid,
            storable(url),
            Jsonb(storable(payload)),
            "pending" if failure is None else "failed",
            failure,
        ),
    )


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    status: int | None
    error: str | None
    final: bool = False
    """Not worth retrying (the target is not a public address)."""
    quarantined: bool = False
    """The POST raised something other than an HTTP error: the delivery's own fault."""


async def post(
    http: httpx.AsyncClient, secret: str, delivery_id: int, url: str, payload: dict[str, Any]
) -> Attempt:
    body = encode(payload)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        DELIVERY_HEADER: str(delivery_id),
    }
    try:
        # Redirects are never followed: the signed body goes to the job's URL and nowhere else.
        response = await http.post(url, content=body, headers=headers, follow_redirects=False)
    except httpx.HTTPError as error:
        return Attempt(False, None, reason(error), final=refused_target(error))
    # A target is no dependency: whatever a POST to it raises is the delivery's fault.
    except Exception as error:  # noqa: BLE001
        return Attempt(False, None, reason(error), final=True, quarantined=True)
    ok = 200 <= response.status_code < 300
    return Attempt(ok, response.status_code, None if ok else storable(response.text[:500]))


async def deliver_due(
    connection: psycopg.AsyncConnection[Any], http: httpx.AsyncClient, settings: ApiSettings
) -> int:
    """Sends the deliveries that are due (of the namespaces the watcher follows); returns
    how many were attempted."""
    async with connection.transaction():
        cursor = await connection.execute(
            "select id, url, payload, attempts from webhook_deliveries"
            " where state = 'pending' and next_attempt_at <= now()"
            " and (%s or namespace = any(%s))"
            " order by next_attempt_at limit %s for update skip locked",
            (*followed(settings), BATCH),
        )
        due = await cursor.fetchall()
        attempts = await asyncio.gather(
            *(post(http, settings.webhook_secret, row[0], row[1], row[2]) for row in due)
        )
        for (delivery_id, _, _, tried), attempt in zip(due, attempts, strict=True):
            await record(connection, settings, delivery_id, tried + 1, attempt)
    await measure_backlog(connection, settings)
    return len(due)


def followed(settings: ApiSettings) -> tuple[bool, list[str]]:
    """The parameters of `(%s or namespace = any(%s))`: the deliveries of the namespaces
    the watcher follows, or all of them when it follows all."""
    return not settings.watch_namespaces, list(settings.watch_namespaces)


async def measure_backlog(connection: psycopg.AsyncConnection[Any], settings: ApiSettings) -> None:
    cursor = await connection.execute(
        "select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)"
        " from webhook_deliveries where state = 'pending' and (%s or namespace = any(%s))",
        followed(settings),
    )
    pending, oldest_seconds = await cursor.fetchone() or (0, 0)
    WEBHOOKS_PENDING.set(pending)
    WEBHOOK_OLDEST_PENDING_SECONDS.set(float(oldest_seconds))


async def record(
    connection: psycopg.AsyncConnection[Any],
    settings: ApiSettings,
    delivery_id: int,
    attempts: int,
    attempt: Attempt,
) -> None:
    if attempt.delivered:
        state, outcome = "delivered", "delivered"
    elif attempt.final or attempts >= settings.webhook_max_attempts:
        state, outcome = "failed", "failed"
    else:
        state, outcome = "pending", "retry"
    WEBHOOKS.labels(outcome).inc()
    if attempt.quarantined:
        report(Loop.WEBHOOK_SENDER, f"webhook delivery {delivery_id}", attempt.error or "")
    elif outcome != "delivered":
        logger.warning(
            "webhook %d attempt %d: %s", delivery_id, attempts, attempt.error or attempt.status
        )
    await connection.execute(
        "update webhook_deliveries set state = %s, attempts = %s, last_status = %s,"
        " last_error = %s, delivered_at = case when %s then now() end,"
        " next_attempt_at = now() + make_interval(secs => %s) where id = %s",
        (
            state,
            attempts,
            attempt.status,
            attempt.error,
            attempt.delivered,
            backoff(settings, attempts),
            delivery_id,
        ),
    )
