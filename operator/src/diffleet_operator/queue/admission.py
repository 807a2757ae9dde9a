"""Admission: which tier a job runs at, which seed, and whether its models are Ready and
fit together. A job's models are resolved here (`resolve_job_models`), for admission and
for dispatch alike."""

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from diffleet_core import TIER_LABEL as TIER_LABEL
from diffleet_core.messages import ModelRef
from diffleet_core.model_rules import incompatibilities, lookup_namespaces
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import MAX_SEED, GenerationJobSpec, Tier
from diffleet_core.resources.model_cache import ModelCachePhase, ModelCacheSpec, ModelCacheStatus
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.queue.held import Admission


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


def seed_of(job: TrackedJob, admission: Admission | None = None) -> int:
    """The seed of the job, decided once, at its first admission: the held admission's
    (not on the API server yet), else status.seed, else spec.seed or a random one."""
    if admission is not None:
        return admission.seed
    if job.status.seed is not None:
        return job.status.seed
    return choose_seed(job.spec)


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


@dataclass(frozen=True)
class JobModels:
    """A job's models, each Ready: its checkpoint, its LoRAs and its ControlNet."""

    model: ResolvedModel
    loras: list[ResolvedModel]
    control_net: ResolvedModel | None

    def incompatibility(self) -> str | None:
        """Why these models cannot run together (diffleet_core.model_rules); None: they can."""
        problems = incompatibilities(
            self.model.ref,
            [lora.ref for lora in self.loras],
            self.control_net.ref if self.control_net else None,
        )
        return "; ".join(problems) or None


def resolve_job_models(
    models: ModelIndex, namespace: str, spec: GenerationJobSpec, system_namespace: str
) -> JobModels | NotReady:
    """Every model of the job, Ready; else the first that is missing or not Ready (the
    checkpoint, then the LoRAs, then the ControlNet)."""

    def resolve(name: str) -> ResolvedModel | NotReady:
        return resolve_model(models, namespace, name, system_namespace)

    model = resolve(spec.model)
    if isinstance(model, NotReady):
        return model
    loras = []
    for lora in spec.loras or []:
        found = resolve(lora.model)
        if isinstance(found, NotReady):
            return found
        loras.append(found)
    control_net = resolve(spec.control_net.model) if spec.control_net else None
    if isinstance(control_net, NotReady):
        return control_net
    return JobModels(model, loras, control_net)


def resolve_model(
    models: ModelIndex, namespace: str, name: str, system_namespace: str
) -> ResolvedModel | NotReady:
    """A ModelCache by name, where lookup_namespaces says to look, once Ready."""
    for where in lookup_namespaces(namespace, system_namespace):
        body = models.get(where, name)
        if body is not None:
            return ready_model(body)
    return NotReady(
        name,
        Reason.MODEL_NOT_FOUND,
        f"ModelCache {name!r} not found in {namespace!r} or {system_namespace!r}",
    )


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
