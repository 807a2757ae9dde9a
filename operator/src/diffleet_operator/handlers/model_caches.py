"""ModelCache handlers: track them for admission, and verify their artifacts."""

import asyncio
from typing import Any

import boto3
import kopf
from botocore.config import Config

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import model_cache
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import ModelCachePhase, ModelCacheSpec
from diffleet_operator.admitter import Admitter
from diffleet_operator.runtime import Runtime
from diffleet_operator.verification import Refused, verify

RESOURCE = (API_GROUP, API_VERSION, model_cache.PLURAL)
S3_CONFIG = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3})


@kopf.on.event(*RESOURCE)
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keeps the model index in step; jobs waiting for a model are looked at again."""
    models = Runtime.of(memo).models
    meta = body["metadata"]
    if event["type"] == "DELETED":
        models.remove(meta["namespace"], meta["name"])
    else:
        models.observe(body)
    await Admitter.of(memo).retry_all_waiting()


@kopf.on.create(*RESOURCE, retries=5, backoff=5)
@kopf.on.update(*RESOURCE, field="spec", retries=5, backoff=5)
async def verify_artifact(
    body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    """Ready once the artifact exists, is safetensors only, and matches spec.sha256."""
    parsed = ModelCacheSpec.model_validate(dict(spec))
    s3 = boto3.client("s3", config=S3_CONFIG)
    result = await asyncio.to_thread(verify, parsed, s3)
    generation = meta.get("generation")
    if isinstance(result, Refused):
        patch.status.update(
            phase=ModelCachePhase.FAILED,
            reason=result.reason,
            message=result.message,
            observedGeneration=generation,
        )
        kopf.warn(body, reason=result.reason, message=result.message)
        return
    patch.status.update(
        phase=ModelCachePhase.READY,
        digest=result.digest,
        sizeBytes=result.size_bytes,
        reason=Reason.VERIFIED,
        message=f"sha256 {result.digest}",
        observedGeneration=generation,
    )
