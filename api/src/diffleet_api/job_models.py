"""The models a job names, as the API checks them before creating it: each must exist
(in the tenant's namespace or the platform's) and be of the type its field asks for; then
they must fit together and their ControlNets' preprocessors run, by the operator's rules
at admission (diffleet_core.model_rules, diffleet_core.preprocessors), so that a job the
operator would refuse is a 422 here."""

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from diffleet_api.errors import FieldError
from diffleet_core.messages import ModelRef
from diffleet_core.model_rules import (
    JobModelRefs,
    control_field,
    image_encoder_problem,
    incompatibilities,
)
from diffleet_core.preprocessors import detected_types, preprocess_problems
from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec, Mode
from diffleet_core.resources.model_cache import (
    CONDITIONING_TYPES,
    BaseModelFamily,
    ModelFormat,
    ModelType,
)


@dataclass(frozen=True)
class ModelKind:
    """What the API needs of a ModelCache: the model as the rules read it (name, type,
    family, controlType; what prices a job is its family) and an IP-Adapter's image
    encoder."""

    ref: ModelRef
    image_encoder: str | None = None

    @property
    def type(self) -> ModelType:
        return self.ref.type

    @property
    def family(self) -> BaseModelFamily | None:
        return self.ref.base_model

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "ModelKind":
        meta, spec = body["metadata"], body["spec"]
        family, control_type = spec.get("baseModel"), spec.get("controlType")
        ref = ModelRef(
            namespace=meta["namespace"],
            name=meta["name"],
            source=spec["source"],
            format=ModelFormat(spec["format"]),
            type=ModelType(spec.get("type", ModelType.CHECKPOINT)),
            base_model=BaseModelFamily(family) if family else None,
            control_type=ControlType(control_type) if control_type else None,
            # Not Ready yet, perhaps: the rules never read the digest.
            digest=(body.get("status") or {}).get("digest", ""),
        )
        return cls(ref, spec.get("imageEncoder"))


@dataclass(frozen=True)
class NamedModel:
    """A model a job names: the field that names it, its name and the types it may be."""

    field: str
    name: str
    types: tuple[ModelType, ...]


def named_models(spec: GenerationJobSpec) -> list[NamedModel]:
    """Every model the spec names, its primary model first (`model` is not used in mode
    upscale, where `upscale.model` is the primary one)."""
    named = []
    if spec.mode is not Mode.UPSCALE:
        named.append(NamedModel("model", spec.primary_model, (ModelType.CHECKPOINT,)))
    named += [
        NamedModel(f"loras[{index}].model", lora.model, (ModelType.LORA,))
        for index, lora in enumerate(spec.loras or [])
    ]
    named += [
        NamedModel(f"{control_field(spec, index)}.model", control.model, CONDITIONING_TYPES)
        for index, control in enumerate(spec.controls)
    ]
    named += [
        NamedModel(f"ipAdapters[{index}].model", adapter.model, (ModelType.IP_ADAPTER,))
        for index, adapter in enumerate(spec.ip_adapters or [])
    ]
    named += [
        NamedModel(f"embeddings[{index}]", name, (ModelType.EMBEDDING,))
        for index, name in enumerate(spec.embeddings or [])
    ]
    for field, name, model_type in (
        ("video.motionAdapter", spec.video and spec.video.motion_adapter, ModelType.MOTION_ADAPTER),
        (
            "removeBackground.model",
            spec.remove_background and spec.remove_background.model,
            ModelType.BACKGROUND_REMOVER,
        ),
        ("vae", spec.vae, ModelType.VAE),
        ("upscale.model", spec.upscale and spec.upscale.model, ModelType.UPSCALER),
        ("restoreFaces.model", spec.restore_faces and spec.restore_faces.model, ModelType.RESTORER),
    ):
        if name:
            named.append(NamedModel(field, name, (model_type,)))
    return named


def model_errors(
    spec: GenerationJobSpec, kinds: Mapping[str, ModelKind | None], where: str, field_prefix: str
) -> list[FieldError]:
    """An error for each model the spec names that does not exist (`kinds[name]` None) or
    is not of its field's type. `where`: the namespaces looked in, for the message."""
    errors = []
    for named in named_models(spec):
        kind = kinds[named.name]
        field = f"{field_prefix}{named.field}"
        if kind is None:
            message = f"no ModelCache {named.name!r} in namespace {where}"
            errors.append(FieldError(field=field, rule="exists", message=message))
        elif kind.type not in named.types:
            wanted = " or ".join(model_type.value for model_type in named.types)
            message = f"ModelCache {named.name!r} is of type {kind.type.value}, not {wanted}"
            errors.append(FieldError(field=field, rule="modelType", message=message))
    return errors


def image_encoders(spec: GenerationJobSpec, kinds: Mapping[str, ModelKind | None]) -> list[str]:
    """The image encoders the spec's IP-Adapters name (one, unless they disagree)."""
    encoders = (kinds[adapter.model] for adapter in spec.ip_adapters or [])
    return list(dict.fromkeys(k.image_encoder for k in encoders if k and k.image_encoder))


def needed_detectors(
    spec: GenerationJobSpec, kinds: Mapping[str, ModelKind | None]
) -> list[ControlType]:
    """The detector types the spec's auto-preprocessed ControlNets need (its models each
    exist and are of their type: model_errors found none)."""
    return detected_types(spec, [ref_of(kinds, control.model) for control in spec.controls])


def fit_errors(
    spec: GenerationJobSpec,
    kinds: Mapping[str, ModelKind | None],
    detectors: Collection[ControlType],
    where: str,
    field_prefix: str,
) -> list[FieldError]:
    """An error for each reason the operator would refuse these models at admission:
    a preprocessor that cannot run (`detectors`: the types a detector is registered for),
    IP-Adapters of different image encoders or of one that does not exist, models that do
    not fit together. `kinds` holds the spec's models, each of its type (model_errors found
    none), and its IP-Adapters' image encoder."""

    def errors(sentences: list[str], rule: str) -> list[FieldError]:
        # Each sentence starts with the field it is about ("ipAdapters: ...").
        return [
            FieldError(field=f"{field_prefix}{s.split(':', 1)[0]}", rule=rule, message=s)
            for s in sentences
        ]

    control_nets = [ref_of(kinds, control.model) for control in spec.controls]
    found = errors(preprocess_problems(spec, control_nets, detectors), "preprocessor")
    adapters = {a.model: kinds[a.model] for a in spec.ip_adapters or []}
    problem = image_encoder_problem({n: k.image_encoder for n, k in adapters.items() if k})
    encoder = None
    if problem is not None:
        found += errors([problem], "compatibility")
    elif encoders := image_encoders(spec, kinds):
        encoder = kinds[encoders[0]]
        if encoder is None:
            message = f"no ModelCache {encoders[0]!r} (the IP-Adapters' image encoder) in {where}"
            found.append(
                FieldError(field=f"{field_prefix}ipAdapters", rule="exists", message=message)
            )

    def optional(name: str | None) -> ModelRef | None:
        return None if name is None else ref_of(kinds, name)

    refs = JobModelRefs(
        model=ref_of(kinds, spec.primary_model),
        loras=[ref_of(kinds, lora.model) for lora in spec.loras or []],
        control_nets=control_nets,
        embeddings=[ref_of(kinds, name) for name in spec.embeddings or []],
        vae=optional(spec.vae),
        upscaler=optional(spec.upscale.model if spec.upscale else None),
        restorer=optional(spec.restore_faces.model if spec.restore_faces else None),
        ip_adapters=[ref_of(kinds, name) for name in adapters],
        image_encoder=encoder.ref if encoder is not None else None,
        motion_adapter=optional(spec.video.motion_adapter if spec.video else None),
        background_remover=optional(
            spec.remove_background.model if spec.remove_background else None
        ),
    )
    return found + errors(incompatibilities(refs, spec), "compatibility")


def ref_of(kinds: Mapping[str, ModelKind | None], name: str) -> ModelRef:
    kind = kinds[name]
    assert kind is not None, "model_errors found every model"
    return kind.ref


def pricing_family(
    spec: GenerationJobSpec, kinds: Mapping[str, ModelKind | None]
) -> BaseModelFamily | None:
    """The family a job is priced by: its checkpoint's; None in mode upscale."""
    if spec.mode is Mode.UPSCALE:
        return None
    kind = kinds[spec.primary_model]
    return kind.family if kind is not None else None
