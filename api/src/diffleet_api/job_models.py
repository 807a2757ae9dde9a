"""The models a job names, as the API checks them before creating it: each must exist
(in the tenant's namespace or the platform's) and be of the type its field asks for. Which
models fit together (a LoRA of the checkpoint's family, ...) is the operator's check at
admission (diffleet_core.model_rules)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffleet_api.errors import FieldError
from diffleet_core.resources.generation_job import GenerationJobSpec, Mode
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType


@dataclass(frozen=True)
class ModelKind:
    """What the API needs of a ModelCache: its type, and its family (what prices a job)."""

    type: ModelType
    family: BaseModelFamily | None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "ModelKind":
        spec = body["spec"]
        family = spec.get("baseModel")
        return cls(
            ModelType(spec.get("type", ModelType.CHECKPOINT)),
            BaseModelFamily(family) if family else None,
        )


@dataclass(frozen=True)
class NamedModel:
    """A model a job names: the field that names it, its name and the type it must be."""

    field: str
    name: str
    type: ModelType


def named_models(spec: GenerationJobSpec) -> list[NamedModel]:
    """Every model the spec names, its primary model first (`model` is not used in mode
    upscale, where `upscale.model` is the primary one)."""
    named = []
    if spec.mode is not Mode.UPSCALE:
        named.append(NamedModel("model", spec.primary_model, ModelType.CHECKPOINT))
    named += [
        NamedModel(f"loras[{index}].model", lora.model, ModelType.LORA)
        for index, lora in enumerate(spec.loras or [])
    ]
    if spec.control_net is not None:
        named.append(NamedModel("controlNet.model", spec.control_net.model, ModelType.CONTROLNET))
    named += [
        NamedModel(f"embeddings[{index}]", name, ModelType.EMBEDDING)
        for index, name in enumerate(spec.embeddings or [])
    ]
    if spec.vae is not None:
        named.append(NamedModel("vae", spec.vae, ModelType.VAE))
    if spec.upscale is not None:
        named.append(NamedModel("upscale.model", spec.upscale.model, ModelType.UPSCALER))
    if spec.restore_faces is not None:
        named.append(NamedModel("restoreFaces.model", spec.restore_faces.model, ModelType.RESTORER))
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
        elif kind.type is not named.type:
            message = (
                f"ModelCache {named.name!r} is of type {kind.type.value}, not {named.type.value}"
            )
            errors.append(FieldError(field=field, rule="modelType", message=message))
    return errors


def pricing_family(
    spec: GenerationJobSpec, kinds: Mapping[str, ModelKind | None]
) -> BaseModelFamily | None:
    """The family a job is priced by: its checkpoint's; None in mode upscale."""
    if spec.mode is Mode.UPSCALE:
        return None
    kind = kinds[spec.primary_model]
    return kind.family if kind is not None else None
