"""The model rules shared by the API, the operator and the worker: where a model's name
is looked up, and which models run together."""

import pytest

from diffleet_core.messages import ModelRef
from diffleet_core.model_rules import incompatibilities, lookup_namespaces
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType


def ref(name: str, type: str, base: str = "sd15") -> ModelRef:
    return ModelRef(
        namespace="ns",
        name=name,
        source=f"s3://models/{name}.safetensors",
        format=ModelFormat.SAFETENSORS,
        type=ModelType(type),
        base_model=BaseModelFamily(base),
        digest="sha256:" + "0" * 64,
    )


def test_a_name_is_looked_up_in_its_namespace_then_the_systems() -> None:
    assert lookup_namespaces("team-a", "diffleet-system") == ("team-a", "diffleet-system")
    assert lookup_namespaces("diffleet-system", "diffleet-system") == ("diffleet-system",)


def test_models_of_one_family_fit() -> None:
    assert (
        incompatibilities(ref("m", "checkpoint"), [ref("l", "lora")], ref("c", "controlnet")) == []
    )


@pytest.mark.parametrize(
    ("model", "loras", "control_net", "problem"),
    [
        (ref("m", "lora"), [], None, "model m is a lora, not a checkpoint"),
        (ref("m", "checkpoint"), [ref("l", "lora", "sdxl")], None, "loras: l is not a sd15 LoRA"),
        (ref("m", "checkpoint"), [ref("l", "checkpoint")], None, "loras: l is not a sd15 LoRA"),
        (
            ref("m", "checkpoint", "sdxl"),
            [],
            ref("c", "controlnet"),
            "controlNet.model: c is not a sdxl ControlNet",
        ),
    ],
)
def test_each_mismatch_is_named(
    model: ModelRef, loras: list[ModelRef], control_net: ModelRef | None, problem: str
) -> None:
    assert incompatibilities(model, loras, control_net) == [problem]
