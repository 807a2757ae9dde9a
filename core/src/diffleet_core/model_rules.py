"""Rules about the models a job names, shared by the API, the operator and the worker:
where a model's name is looked up, and which models fit together."""

from diffleet_core.messages import ModelRef
from diffleet_core.resources.model_cache import ModelType


def lookup_namespaces(namespace: str, system_namespace: str) -> tuple[str, ...]:
    """Where a job's (or a tenant's) model name is looked for, in order: its own namespace,
    then the platform's (`system_namespace`); once when they are the same."""
    return tuple(dict.fromkeys((namespace, system_namespace)))


def incompatibilities(
    model: ModelRef, loras: list[ModelRef], control_net: ModelRef | None
) -> list[str]:
    """What keeps these models from running together, one sentence per problem (empty:
    they fit): the model must be a checkpoint, each LoRA a LoRA and the ControlNet a
    ControlNet, all of the checkpoint's base model family."""
    family = model.base_model
    problems = []
    if model.type is not ModelType.CHECKPOINT:
        problems.append(f"model {model.name} is a {model.type.value}, not a checkpoint")
    for lora in loras:
        if lora.type is not ModelType.LORA or lora.base_model is not family:
            problems.append(f"loras: {lora.name} is not a {family.value} LoRA")
    if control_net is not None and (
        control_net.type is not ModelType.CONTROLNET or control_net.base_model is not family
    ):
        problems.append(f"controlNet.model: {control_net.name} is not a {family.value} ControlNet")
    return problems
