"""Rules about the models a job names, shared by the API, the operator and the worker:
where a model's name is looked up, and which models fit together."""

from dataclasses import dataclass, field

from diffleet_core.messages import DispatchedJob, ModelRef
from diffleet_core.resources.generation_job import Mode
from diffleet_core.resources.model_cache import ModelType


def lookup_namespaces(namespace: str, system_namespace: str) -> tuple[str, ...]:
    """Where a job's (or a tenant's) model name is looked for, in order: its own namespace,
    then the platform's (`system_namespace`); once when they are the same."""
    return tuple(dict.fromkeys((namespace, system_namespace)))


@dataclass(frozen=True)
class JobModelRefs:
    """Every model a job runs with, resolved: `model` is its primary model (its
    checkpoint; its upscaler in mode upscale)."""

    model: ModelRef
    loras: list[ModelRef] = field(default_factory=list)
    control_net: ModelRef | None = None
    embeddings: list[ModelRef] = field(default_factory=list)
    vae: ModelRef | None = None
    upscaler: ModelRef | None = None
    restorer: ModelRef | None = None
    safety: ModelRef | None = None

    @classmethod
    def of_order(cls, order: DispatchedJob) -> "JobModelRefs":
        return cls(
            order.model,
            order.loras,
            order.control_net,
            order.embeddings,
            order.vae,
            order.upscaler,
            order.restorer,
            order.safety,
        )


def incompatibilities(models: JobModelRefs, mode: Mode) -> list[str]:
    """What keeps these models from running together, one sentence per problem (empty:
    they fit). The primary model is a checkpoint (an upscaler in mode upscale); each
    LoRA, ControlNet, embedding and VAE is of its type and of the checkpoint's family;
    the upscaler, restorer and safety model are of their types."""
    model = models.model
    problems = []
    # In mode upscale the primary model is the upscaler, checked with it below.
    if mode is not Mode.UPSCALE and model.type is not ModelType.CHECKPOINT:
        problems.append(f"model {model.name} is a {model.type.value}, not a checkpoint")
    family = model.base_model

    def of_family(ref: ModelRef, kind: ModelType) -> bool:
        return ref.type is kind and ref.base_model is family

    label = family.value if family is not None else "the checkpoint's"
    for lora in models.loras:
        if not of_family(lora, ModelType.LORA):
            problems.append(f"loras: {lora.name} is not a {label} LoRA")
    if models.control_net is not None and not of_family(models.control_net, ModelType.CONTROLNET):
        problems.append(f"controlNet.model: {models.control_net.name} is not a {label} ControlNet")
    for embedding in models.embeddings:
        if not of_family(embedding, ModelType.EMBEDDING):
            problems.append(f"embeddings: {embedding.name} is not a {label} embedding")
    if models.vae is not None and not of_family(models.vae, ModelType.VAE):
        problems.append(f"vae: {models.vae.name} is not a {label} VAE")
    for where, ref, kind in (
        ("upscale.model", models.upscaler, ModelType.UPSCALER),
        ("restoreFaces.model", models.restorer, ModelType.RESTORER),
        ("safetyModel", models.safety, ModelType.SAFETY),
    ):
        if ref is not None and ref.type is not kind:
            problems.append(f"{where}: {ref.name} is of type {ref.type.value}, not {kind.value}")
    return problems
