"""One record that cannot be handled never stops a background loop of the API (the job
watcher with settlement, refunds and webhook enqueueing, the webhook sender, the
abandoned-job sweep): the record is quarantined and the loop goes on with the next.

Whose fault a failure is, is decided by the exception's class:

- a dependency's, when PostgreSQL or the Kubernetes API server could not be reached or
  could not answer: psycopg's OperationalError (connection lost, pool exhausted, server
  shutting down, serialization failure, deadlock, statement timeout), InterfaceError and
  InternalError; OSError and TimeoutError; aiohttp's ClientError; an ApiException with
  no status, 401, 403 (our own credentials), 408, 429 or 5xx. The loop stops, logs it
  and starts over after a pause, so the record is tried again once the dependency is
  back: it is never quarantined for a dependency's outage;
- the record's, for any other exception raised while handling it: a value PostgreSQL
  refuses, a spec or status the models refuse, a URL the HTTP client cannot use,
  another 4xx from the API server. It would recur on every try, so the record is
  quarantined at once: set aside with the reason (the job's history row, the delivery's
  row), counted in `diffleet_api_records_quarantined_total{loop}` and logged, once per
  record.

A webhook target is not a dependency: whatever a POST to it raises is the delivery's.
"""

import logging
from enum import StrEnum

import aiohttp
import psycopg
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_api.history import storable
from diffleet_api.metrics import RECORDS_QUARANTINED

logger = logging.getLogger(__name__)

REASON_LENGTH = 500
DEPENDENCY_ERRORS = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.InternalError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)
DEPENDENCY_STATUSES = frozenset({401, 403, 408, 429})


class Loop(StrEnum):
    """The background loops, as the metric's `loop` label names them."""

    JOB_WATCHER = "job_watcher"
    TRAINING_WATCHER = "training_watcher"
    WEBHOOK_SENDER = "webhook_sender"
    ABANDON_SWEEP = "abandon_sweep"


for _loop in Loop:  # every series exists from the start, at 0
    RECORDS_QUARANTINED.labels(_loop.value)


def dependency_failed(error: BaseException) -> bool:
    """Whether `error` is a dependency's failure (retry later), not the record's."""
    if isinstance(error, BaseExceptionGroup):
        return any(dependency_failed(inner) for inner in error.exceptions)
    if isinstance(error, ApiException):
        status = error.status
        return not status or status in DEPENDENCY_STATUSES or status >= 500
    return isinstance(error, DEPENDENCY_ERRORS)


def reason(error: BaseException) -> str:
    """Why a record was quarantined, as stored: the innermost error of a group (the
    group's own message says nothing), its class and message, storable, bounded."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text: str = storable(f"{type(error).__name__}: {error}")
    return text[:REASON_LENGTH]


def report(loop: Loop, record: str, why: str) -> None:
    """Counts and logs one quarantined record."""
    RECORDS_QUARANTINED.labels(loop.value).inc()
    logger.error("%s: quarantined %s: %s", loop.value, record, why)


class Quarantine:
    """The records a loop has quarantined and may meet again (a job's next event, the
    next sweep, a restart of the watcher): each is reported once, until forgotten."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.reasons: dict[str, str] = {}

    def add(self, key: str, record: str, why: str) -> bool:
        """Quarantines `key`; True the first time (reported then)."""
        if key in self.reasons:
            return False
        self.reasons[key] = why
        report(self.loop, record, why)
        return True

    def __contains__(self, key: str) -> bool:
        return key in self.reasons

    def forget(self, key: str) -> None:
        self.reasons.pop(key, None)
