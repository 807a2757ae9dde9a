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
from diffleet_core.model_rules import (
    JobModelRefs,
    image_encoder_problem,
    incompatibilities,
    lookup_namespaces,
)
from diffleet_core.preprocessors import control_type, detected_types, preprocess_problems
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import MAX_SEED, ControlType, GenerationJobSpec, Tier
from diffleet_core.resources.model_cache import (
    ModelCachePhase,
    ModelCacheSpec,
    ModelCacheStatus,
    ModelType,
)
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
    upscale), the models its spec names, those they need (the detectors of its
    auto-preprocessed ControlNets, its IP-Adapters' image encoder) and the safety model of
    its namespace's policy. `refusals`: what resolving found that no worker could run
    (a preprocessor that does not run, IP-Adapters of different encoders)."""

    model: ResolvedModel
    loras: list[ResolvedModel] = field(default_factory=list)
    control_nets: list[ResolvedModel] = field(default_factory=list)
    # The type of conditioning of each ControlNet entry (model_rules.control_type).
    control_types: list[ControlType] = field(default_factory=list)
    detectors: list[ResolvedModel] = field(default_factory=list)
    ip_adapters: list[ResolvedModel] = field(default_factory=list)
    image_encoder: ResolvedModel | None = None
    motion_adapter: ResolvedModel | None = None
    background_remover: ResolvedModel | None = None
    embeddings: list[ResolvedModel] = field(default_factory=list)
    vae: ResolvedModel | None = None
    upscaler: ResolvedModel | None = None
    restorer: ResolvedModel | None = None
    safety: ResolvedModel | None = None
    # GPU memory the job's activations take beyond its models' weights (video frames).
    activation_gib: float = 0.0
    refusals: list[str] = field(default_factory=list)

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
            detectors=[detector.ref for detector in self.detectors],
            ip_adapters=[adapter.ref for adapter in self.ip_adapters],
            image_encoder=ref(self.image_encoder),
            motion_adapter=ref(self.motion_adapter),
            background_remover=ref(self.background_remover),
        )

    @property
    def in_gpu_memory(self) -> list[ResolvedModel]:
        """The models whose VRAM the job needs, each once: all but its LoRAs, embeddings
        and safety classifier (small beside a checkpoint; the classifier runs after)."""
        found = [
            self.model,
            *self.control_nets,
            *self.detectors,
            *self.ip_adapters,
            self.image_encoder,
            self.motion_adapter,
            self.background_remover,
            self.vae,
            self.upscaler,
            self.restorer,
        ]
        unique = {model.ref.digest: model for model in found if model is not None}
        return list(unique.values())

    def incompatibility(self, spec: GenerationJobSpec) -> str | None:
        """Why these models cannot run together (diffleet_core.model_rules, and what
        resolving refused); None: they can."""
        return "; ".join([*self.refusals, *incompatibilities(self.refs, spec)]) or None


def resolve_job_models(
    models: ModelIndex,
    namespace: str,
    spec: GenerationJobSpec,
    system_namespace: str,
    safety_model: str | None = None,
) -> JobModels | NotReady:
    """Every model of the job, Ready (`safety_model`: its namespace's policy's, if any);
    else the first that is missing or not Ready, in the order the spec names them, then
    the image encoder and the detectors those models need."""
    found: dict[str, ResolvedModel] = {}
    for name in model_names(spec, safety_model):
        model = resolve_model(models, namespace, name, system_namespace)
        if isinstance(model, NotReady):
            return model
        found[name] = model

    def optional(name: str | None) -> ResolvedModel | None:
        return None if name is None else found[name]

    control_nets = [found[control.model] for control in spec.controls]
    ip_adapters = [found[adapter.model] for adapter in spec.ip_adapters or []]
    encoder = resolve_image_encoder(models, namespace, ip_adapters, system_namespace)
    if isinstance(encoder, NotReady):
        return encoder
    refs = [control.ref for control in control_nets]
    detectors = resolve_detectors(models, namespace, detected_types(spec, refs), system_namespace)
    if isinstance(detectors, NotReady):
        return detectors
    kinds = [control_type(entry, ref) for entry, ref in zip(spec.controls, refs, strict=True)]
    refusals = preprocess_problems(spec, refs, detectors.keys())
    if isinstance(encoder, str):
        refusals.append(encoder)
    return JobModels(
        model=found[spec.primary_model],
        loras=[found[lora.model] for lora in spec.loras or []],
        control_nets=control_nets,
        # An entry without a type is of a model that is no ControlNet: refused by the rules.
        control_types=[kind for kind in kinds if kind is not None],
        detectors=list(detectors.values()),
        ip_adapters=ip_adapters,
        image_encoder=encoder if isinstance(encoder, ResolvedModel) else None,
        motion_adapter=optional(spec.video.motion_adapter if spec.video else None),
        background_remover=optional(
            spec.remove_background.model if spec.remove_background else None
        ),
        embeddings=[found[name] for name in spec.embeddings or []],
        vae=optional(spec.vae),
        upscaler=optional(spec.upscale.model if spec.upscale else None),
        restorer=optional(spec.restore_faces.model if spec.restore_faces else None),
        safety=optional(safety_model),
        activation_gib=video_activation_gib(spec),
        refusals=refusals,
    )


def model_names(spec: GenerationJobSpec, safety_model: str | None) -> list[str]:
    """The ModelCache names a job's spec (and its policy) name, primary model first, each
    once."""
    names = [spec.primary_model, *(lora.model for lora in spec.loras or [])]
    names += [control.model for control in spec.controls]
    names += [adapter.model for adapter in spec.ip_adapters or []]
    names += spec.embeddings or []
    for optional in (
        spec.video.motion_adapter if spec.video else None,
        spec.remove_background.model if spec.remove_background else None,
        spec.vae,
        spec.upscale.model if spec.upscale else None,
        spec.restore_faces.model if spec.restore_faces else None,
        safety_model,
    ):
        if optional is not None:
            names.append(optional)
    return list(dict.fromkeys(names))


def resolve_image_encoder(
    models: ModelIndex, namespace: str, adapters: list[ResolvedModel], system_namespace: str
) -> ResolvedModel | NotReady | str | None:
    """The image encoder the IP-Adapters share, looked up like a job's models; None
    without IP-Adapters; a refusal (str) when they name different ones."""
    encoders = {adapter.ref.name: adapter.spec.image_encoder for adapter in adapters}
    if problem := image_encoder_problem(encoders):
        return problem
    names = [name for name in encoders.values() if name is not None]
    if not names:
        return None
    return resolve_model(models, namespace, names[0], system_namespace)


def resolve_detectors(
    models: ModelIndex, namespace: str, kinds: list[ControlType], system_namespace: str
) -> dict[ControlType, ResolvedModel] | NotReady:
    """A Ready detector of each type (a ModelCache of type detector and that controlType,
    where lookup_namespaces says to look, by name where a namespace has several); a type
    with none is left out (preprocess_problems refuses it), a type whose only ones are not
    Ready yet waits for them."""
    found: dict[ControlType, ResolvedModel] = {}
    for kind in kinds:
        candidates = [
            body
            for where in lookup_namespaces(namespace, system_namespace)
            for body in sorted(models.in_namespaces([where]), key=model_name)
            if (body.get("spec") or {}).get("type") == ModelType.DETECTOR
            and (body.get("spec") or {}).get("controlType") == kind
        ]
        resolved = [ready_model(body) for body in candidates]
        ready = [model for model in resolved if isinstance(model, ResolvedModel)]
        if ready:
            found[kind] = ready[0]
        elif resolved:
            return next(model for model in resolved if isinstance(model, NotReady))
    return found


def model_name(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["name"])


# Activation memory of a video job per frame and megapixel of frame, in GiB. Every frame
# is denoised in one batch through a UNet whose temporal layers attend across frames, so
# the activations grow with frames x pixels, unlike an image job's (small beside its
# weights). About what the released models need in fp16 beyond their weights: SVD-XT,
# 25 frames at 1024x576, some 20 GiB; AnimateDiff, 16 frames at 512x512, some 6 GiB.
VIDEO_GIB_PER_FRAME_MEGAPIXEL = 1.4


def video_activation_gib(spec: GenerationJobSpec) -> float:
    """GPU memory a video job's frames need beyond its models' weights (0 for an image)."""
    if not spec.mode.is_video:
        return 0.0
    width, height = spec.generated_size
    return spec.frame_count * width * height / 1_000_000 * VIDEO_GIB_PER_FRAME_MEGAPIXEL


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
            control_type=spec.control_type,
            digest=status.digest,
            size_bytes=spec.size_bytes,
        )
    except ValidationError as error:
        # Quarantined where it is watched (handlers.model_caches); its jobs wait.
        message = f"ModelCache {name!r} cannot be read: {error.error_count()} invalid field(s)"
        return NotReady(name, Reason.MODEL_NOT_READY, message)
    return ResolvedModel(ref, spec)
