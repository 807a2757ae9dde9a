"""Admission: which tier a job runs at, which seed, and whether its models are Ready and
fit together. A job's models (those its spec names and its namespace's safety model) are
resolved here (`resolve_job_models`), for admission and for dispatch alike."""

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from diffleet_core import TIER_LABEL as TIER_LABEL
from diffleet_core.messages import ModelRef
from diffleet_core.model_rules import JobModelRefs, incompatibilities, lookup_namespaces
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
    """A job's models, each Ready: its primary model (its checkpoint; its upscaler in mode
    upscale), the models its spec names and the safety model of its namespace's policy."""

    model: ResolvedModel
    loras: list[ResolvedModel] = field(default_factory=list)
    control_nets: list[ResolvedModel] = field(default_factory=list)
    embeddings: list[ResolvedModel] = field(default_factory=list)
    vae: ResolvedModel | None = None
    upscaler: ResolvedModel | None = None
    restorer: ResolvedModel | None = None
    safety: ResolvedModel | None = None

    @property
    def refs(self) -> JobModelRefs:
        def ref(model: ResolvedModel | None) -> ModelRef | None:
            return None if model is None else model.ref

        return JobModelRefs(
            model=self.model.ref,
            loras=[lora.ref for lora in self.loras],
            control_nets=[control.ref for control in self.control_nets],
            embeddings=[embedding.ref for embedding in self.embeddings],
            vae=ref(self.vae),
            upscaler=ref(self.upscaler),
            restorer=ref(self.restorer),
            safety=ref(self.safety),
        )

    @property
    def in_gpu_memory(self) -> list[ResolvedModel]:
        """The models whose VRAM the job needs: the primary model, the VAE, upscaler and
        restorer, each once (adapters and the safety classifier are small beside them)."""
        found = [self.model, self.vae, self.upscaler, self.restorer]
        unique = {model.ref.digest: model for model in found if model is not None}
        return list(unique.values())

    def incompatibility(self, spec: GenerationJobSpec) -> str | None:
        """Why these models cannot run together (diffleet_core.model_rules); None: they can."""
        return "; ".join(incompatibilities(self.refs, spec)) or None


def resolve_job_models(
    models: ModelIndex,
    namespace: str,
    spec: GenerationJobSpec,
    system_namespace: str,
    safety_model: str | None = None,
) -> JobModels | NotReady:
    """Every model of the job, Ready (`safety_model`: its namespace's policy's, if any);
    else the first that is missing or not Ready, in the order the spec names them."""
    found: dict[str, ResolvedModel] = {}
    for name in model_names(spec, safety_model):
        model = resolve_model(models, namespace, name, system_namespace)
        if isinstance(model, NotReady):
            return model
        found[name] = model

    def optional(name: str | None) -> ResolvedModel | None:
        return None if name is None else found[name]

    return JobModels(
        model=found[spec.primary_model],
        loras=[found[lora.model] for lora in spec.loras or []],
        control_nets=[found[control.model] for control in spec.controls],
        embeddings=[found[name] for name in spec.embeddings or []],
        vae=optional(spec.vae),
        upscaler=optional(spec.upscale.model if spec.upscale else None),
        restorer=optional(spec.restore_faces.model if spec.restore_faces else None),
        safety=optional(safety_model),
    )


def model_names(spec: GenerationJobSpec, safety_model: str | None) -> list[str]:
    """The ModelCache names a job needs, primary model first, each once."""
    names = [spec.primary_model, *(lora.model for lora in spec.loras or [])]
    names += [control.model for control in spec.controls]
    names += spec.embeddings or []
    for optional in (
        spec.vae,
        spec.upscale.model if spec.upscale else None,
        spec.restore_faces.model if spec.restore_faces else None,
        safety_model,
    ):
        if optional is not None:
            names.append(optional)
    return list(dict.fromkeys(names))


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
