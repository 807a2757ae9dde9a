"""Poisoned records: one record whose handling fails never stops a loop.

Every loop of the operator (admission, dispatch, results, housekeeping, pre-warming and
the ModelCache and Lease handlers) handles its records one at a time and asks `transient`
what a failure means:

- a failure of a dependency (the API server or RabbitMQ unreachable, timing out,
  throttling, conflicting, failing on its side, or refusing this operator's credentials)
  is the platform's, not the record's: the record is tried again with bounded backoff;
- any other failure is the record's own (it cannot be parsed, the API server refuses
  a write of it, or handling it hits a bug): the record is *quarantined*, once: a
  `Quarantined` condition with the reason and message on the object (GenerationJobs),
  a Warning Event (GenerationJobs and ModelCaches), one log line, and a count in
  `diffleet_operator_records_quarantined_total{loop}`. A message that cannot be parsed
  is dropped (rejected, never redelivered) with a log line and a count. The loop goes on
  with the next record.
"""

import logging
import unicodedata
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import aiohttp
from aio_pika.exceptions import AMQPException, ChannelInvalidStateError
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.messages import JobRef
from diffleet_core.resources.conditions import ConditionStatus
from diffleet_core.resources.generation_job import KIND
from diffleet_operator import metrics, status
from diffleet_operator.kube import Kube

logger = logging.getLogger(__name__)

CONDITION = "Quarantined"
# Answers of the API server that say "not now" or "not this operator", never "not this
# record": request timeout, conflict, throttling, server errors, and credentials or RBAC
# (a deployment's fault, which fixing must let the record through).
TRANSIENT_STATUSES = frozenset({401, 403, 408, 409, 429})
# Room left for the condition's message (the CRD allows 32768) and an Event's (1024).
MAX_MESSAGE = 1024


class Loop(StrEnum):
    """The `loop` label of the metric: where a record was quarantined."""

    ADMISSION = "admission"
    DISPATCH = "dispatch"
    RESULTS = "results"
    HOUSEKEEPING = "housekeeping"
    PREWARM = "prewarm"
    MODEL_CACHES = "model_caches"
    WORKER_LEASES = "worker_leases"
    GPU_POOLS = "gpu_pools"


class Cause(StrEnum):
    """The quarantine condition's reason: what kind of failure it was."""

    INVALID_RECORD = "InvalidRecord"  # it cannot be parsed
    WRITE_REFUSED = "WriteRefused"  # the API server refused a write of it
    HANDLER_FAILED = "HandlerFailed"  # anything else


def transient(error: BaseException) -> bool:
    """A dependency's failure (retry with backoff), not the record's (quarantine)."""
    if isinstance(error, ApiException):
        return error.status is None or error.status in TRANSIENT_STATUSES or error.status >= 500
    return isinstance(
        error,
        aiohttp.ClientError
        | TimeoutError
        | ConnectionError
        | AMQPException
        # A publish on a channel whose connection is down: it reconnects by itself.
        | ChannelInvalidStateError,
    )


def cause_of(error: BaseException) -> Cause:
    if isinstance(error, ValidationError | UnicodeError):
        return Cause.INVALID_RECORD
    if isinstance(error, ApiException):
        return Cause.WRITE_REFUSED
    return Cause.HANDLER_FAILED


def describe(error: BaseException) -> str:
    """The error in one printable line: a record's NUL or lone surrogate, which a
    validation error quotes, is escaped so that the message itself can be stored."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, ApiException):
        text = f"the API server answered {error.status} {error.reason}: {_body(error)}"
    escaped = "".join(
        char if char == " " or unicodedata.category(char)[0] not in "CZ" else repr(char)[1:-1]
        for char in text
    )
    return escaped[:MAX_MESSAGE]


def _body(error: ApiException) -> str:
    body = error.body
    return body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")


def condition_patch(body: Mapping[str, Any], cause: Cause, message: str) -> dict[str, Any]:
    """The status merge patch that adds the Quarantined condition, from the raw body
    (its status may be what could not be parsed): other conditions are kept as stored."""
    stored_status = body.get("status")
    stored = stored_status.get("conditions") if isinstance(stored_status, Mapping) else None
    kept = [
        condition
        for condition in (stored if isinstance(stored, list) else [])
        if isinstance(condition, Mapping) and condition.get("type") not in (CONDITION, None)
    ]
    quarantined: dict[str, Any] = {
        "type": CONDITION,
        "status": ConditionStatus.TRUE,
        "reason": cause,
        "message": message,
        "lastTransitionTime": status.timestamp(status.now()),
    }
    generation = body.get("metadata", {}).get("generation")
    if isinstance(generation, int):
        quarantined["observedGeneration"] = generation
    return {"conditions": [*kept, quarantined]}


class Quarantine:
    """Records set aside, each reported once per loop until it is forgotten (deleted)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._reported: set[tuple[Loop, str]] = set()

    def forget(self, uid: str) -> None:
        self._reported = {key for key in self._reported if key[1] != uid}

    async def job(self, loop: Loop, body: Mapping[str, Any], error: BaseException) -> None:
        """Quarantines a GenerationJob: condition, Warning Event, log line, count."""
        if not self._first(loop, body, error):
            return
        meta = body["metadata"]
        message = f"{loop} loop: {describe(error)}"
        try:
            await self.kube.patch_job_status(
                meta["namespace"], meta["name"], condition_patch(body, cause_of(error), message)
            )
        except Exception as failed:  # noqa: BLE001 - best effort: the Event and log still say it
            logger.warning("Quarantined condition not written: %s", describe(failed))
        self.kube.post_event(body, CONDITION, message, warning=True)

    async def job_failed(self, loop: Loop, body: Mapping[str, Any], error: BaseException) -> None:
        """Handling a job failed: a transient failure is logged (the loop tries the job
        again later), any other quarantines the job."""
        if transient(error):
            logger.warning("%s loop: %s; trying again later", loop, describe(error))
        else:
            await self.job(loop, body, error)

    async def job_of_message(
        self, loop: Loop, ref: JobRef, cached: Mapping[str, Any] | None, error: BaseException
    ) -> None:
        """As `job_failed`, for a job a message names: its cached body, else the stored
        one (so that its other conditions are kept), else a bare reference."""
        body = cached
        if body is None and not transient(error):
            try:
                body = await self.kube.get_job(ref.namespace, ref.name)
            except Exception as failed:  # noqa: BLE001 - the bare reference will do
                logger.warning("%s loop: job not read: %s", loop, describe(failed))
        if body is None or body["metadata"].get("uid") != ref.uid:
            body = {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid},
            }
        await self.job_failed(loop, body, error)

    def resource_failed(self, loop: Loop, body: Mapping[str, Any], error: BaseException) -> None:
        """Handling a ModelCache or a Lease failed: a transient failure is logged, any
        other quarantines it (Warning Event, log line, count; once)."""
        if transient(error):
            logger.warning("%s loop: %s; trying again later", loop, describe(error))
        elif self._first(loop, body, error):
            self.kube.post_event(body, CONDITION, f"{loop} loop: {describe(error)}", warning=True)

    def _first(self, loop: Loop, body: Mapping[str, Any], error: BaseException) -> bool:
        """Counts and logs the record the first time this loop quarantines it."""
        meta = body.get("metadata") or {}
        key = (loop, str(meta.get("uid")))
        if key in self._reported:
            return False
        self._reported.add(key)
        metrics.RECORDS_QUARANTINED.labels(loop).inc()
        logger.error(
            "%s loop: %s %s/%s quarantined: %s",
            loop,
            body.get("kind", "record"),
            meta.get("namespace"),
            meta.get("name"),
            describe(error),
        )
        return True


def dropped_message(loop: Loop, queue: str) -> None:
    """A message that could not be parsed was rejected (its log line is the broker's)."""
    metrics.RECORDS_QUARANTINED.labels(loop).inc()
    logger.error("%s loop: a malformed message from %s was dropped", loop, queue)
