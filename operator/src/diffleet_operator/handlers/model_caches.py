"""ModelCache handlers: track them for admission, and verify their artifacts."""

import asyncio
from typing import Any

import boto3
import kopf
from botocore.config import Config
from pydantic import ValidationError

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import model_cache
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import ModelCachePhase, ModelCacheSpec, ModelCacheStatus
from diffleet_operator import metrics
from diffleet_operator.quarantine import Loop, describe
from diffleet_operator.queue.admitter import Admitter
from diffleet_operator.runtime import Runtime
from diffleet_operator.verification import Refused, Verified, verify

RESOURCE = (API_GROUP, API_VERSION, model_cache.PLURAL)
S3_CONFIG = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3})


@kopf.on.event(*RESOURCE)
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keeps the model index in step; jobs waiting for a model are looked at again. A
    ModelCache that cannot be read is quarantined (its jobs wait, diffleet_operator
    .admission.ready_model says why)."""
    rt = Runtime.of(memo)
    meta = body["metadata"]
    if event["type"] == "DELETED":
        rt.models.remove(meta["namespace"], meta["name"])
        rt.quarantine.forget(meta["uid"])
    else:
        rt.models.observe(body)
        try:
            ModelCacheSpec.model_validate(body.get("spec"))
            ModelCacheStatus.model_validate(body.get("status") or {})
        except ValidationError as error:
            rt.quarantine.resource_failed(Loop.MODEL_CACHES, body, error)
    await Admitter.of(memo).retry_all_waiting()


@kopf.on.create(*RESOURCE, retries=5, backoff=5)
@kopf.on.update(*RESOURCE, field="spec", retries=5, backoff=5)
async def verify_artifact(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Ready once the artifact exists, is safetensors only, and matches spec.sha256. A
    spec that cannot be read or a malformed source is Failed (InvalidSpec) at once; S3
    failures are retried by kopf (`retries`, `backoff`)."""
    generation = meta.get("generation")
    try:
        parsed = ModelCacheSpec.model_validate(dict(spec))
        s3 = boto3.client("s3", config=S3_CONFIG)
        result: Verified | Refused = await asyncio.to_thread(verify, parsed, s3)
    except ValueError as error:  # pydantic's ValidationError included
        Runtime.of(memo).quarantine.resource_failed(Loop.MODEL_CACHES, body, error)
        result = Refused(Reason.INVALID_SPEC, describe(error))
    if isinstance(result, Refused):
        metrics.MODEL_VERIFICATIONS.labels("refused").inc()
        patch.status.update(
            phase=ModelCachePhase.FAILED,
            reason=result.reason,
            message=result.message,
            observedGeneration=generation,
        )
        kopf.warn(body, reason=result.reason, message=result.message)
        return
    metrics.MODEL_VERIFICATIONS.labels("verified").inc()
    patch.status.update(
        phase=ModelCachePhase.READY,
        digest=result.digest,
        sizeBytes=result.size_bytes,
        reason=Reason.VERIFIED,
        message=f"sha256 {result.digest}",
        observedGeneration=generation,
    )
