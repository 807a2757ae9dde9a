"""Admission: which tier a job runs at, which seed, and whether its models are Ready."""

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from diffleet_core import TIER_LABEL as TIER_LABEL
from diffleet_core.messages import ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import MAX_SEED, GenerationJobSpec, Tier
from diffleet_core.resources.model_cache import ModelCachePhase, ModelCacheSpec, ModelCacheStatus
from diffleet_operator.cache.model_index import ModelIndex


def effective_tier(namespace_labels: dict[str, str], priority: Tier | None) -> Tier:
    """The namespace's tier (label diffleet.io/tier, default free), lowered by priority."""
    try:
        tier = Tier(namespace_labels.get(TIER_LABEL, Tier.FREE))
    except ValueError:
        tier = Tier.FREE
    if priority is not None and priority.rank > tier.rank:
        return priority
    return tier


def choose_seed(spec: GenerationJobSpec) -> int:
    return spec.seed if spec.seed is not None else secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    spec: ModelCacheSpec


@dataclass(frozen=True)
class NotReady:
    """A model the job needs is missing or not Ready: the job waits in Pending."""

    model: str
    reason: Reason
    message: str


def resolve_model(
    models: ModelIndex, namespace: str, name: str, system_namespace: str
) -> ResolvedModel | NotReady:
    """Finds a ModelCache in the job's namespace, then in the system namespace."""
    body: Mapping[str, Any] | None = None
    for candidate in dict.fromkeys((namespace, system_namespace)):
        body = models.get(candidate, name)
        if body is not None:
            break
    if body is None:
        return NotReady(
            name,
            Reason.MODEL_NOT_FOUND,
            f"ModelCache {name!r} not found in {namespace!r} or {system_namespace!r}",
        )
    return ready_model(body)


def ready_model(body: Mapping[str, Any]) -> ResolvedModel | NotReady:
    """A ModelCache as workers are told of it, once it is Ready."""
    name = body["metadata"]["name"]
    try:
        status = ModelCacheStatus.model_validate(body.get("status") or {})
        if status.phase != ModelCachePhase.READY or not status.digest:
            return NotReady(
                name,
                Reason.MODEL_NOT_READY,
                f"ModelCache {name!r} is {status.phase or 'Pending'}, not Ready",
            )
        spec = ModelCacheSpec.model_validate(body.get("spec"))
        ref = ModelRef(
            namespace=body["metadata"]["namespace"],
            name=name,
            source=spec.source,
            format=spec.format,
            type=spec.type,
            base_model=spec.base_model,
            digest=status.digest,
            size_bytes=spec.size_bytes,
        )
    except ValidationError as error:
        # Quarantined where it is watched (handlers.model_caches); its jobs wait.
        message = f"ModelCache {name!r} cannot be read: {error.error_count()} invalid field(s)"
        return NotReady(name, Reason.MODEL_NOT_READY, message)
    return ResolvedModel(ref, spec)
