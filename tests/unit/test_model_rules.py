"""The model rules shared by the API, the operator and the worker: where a model's name
is looked up, and which models run together."""

import pytest

from diffleet_core.messages import ModelRef
from diffleet_core.model_rules import JobModelRefs, incompatibilities, lookup_namespaces
from diffleet_core.resources.generation_job import Mode
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType


def ref(name: str, type: str, base: str | None = "sd15") -> ModelRef:
    return ModelRef(
        namespace="ns",
        name=name,
        source=f"s3://models/{name}.safetensors",
        format=ModelFormat.SAFETENSORS,
        type=ModelType(type),
        base_model=BaseModelFamily(base) if base else None,
        digest="sha256:" + "0" * 64,
    )


def test_a_name_is_looked_up_in_its_namespace_then_the_systems() -> None:
    assert lookup_namespaces("team-a", "diffleet-system") == ("team-a", "diffleet-system")
    assert lookup_namespaces("diffleet-system", "diffleet-system") == ("diffleet-system",)


def test_models_of_one_family_fit() -> None:
    models = JobModelRefs(
        ref("m", "checkpoint"),
        [ref("l", "lora")],
        ref("c", "controlnet"),
        embeddings=[ref("e", "embedding")],
        vae=ref("v", "vae"),
        upscaler=ref("u", "upscaler", None),
        restorer=ref("r", "restorer", None),
        safety=ref("s", "safety", None),
    )
    assert incompatibilities(models, Mode.TXT2IMG) == []


def test_mode_upscale_runs_an_upscaler_alone() -> None:
    upscaler = ref("u", "upscaler", None)
    assert incompatibilities(JobModelRefs(upscaler, upscaler=upscaler), Mode.UPSCALE) == []
    checkpoint = ref("m", "checkpoint")
    assert incompatibilities(JobModelRefs(checkpoint, upscaler=checkpoint), Mode.UPSCALE) == [
        "upscale.model: m is of type checkpoint, not upscaler"
    ]


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
    assert incompatibilities(JobModelRefs(model, loras, control_net), Mode.TXT2IMG) == [problem]


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        (
            JobModelRefs(ref("m", "checkpoint"), embeddings=[ref("e", "embedding", "sdxl")]),
            "embeddings: e is not a sd15 embedding",
        ),
        (JobModelRefs(ref("m", "checkpoint"), vae=ref("v", "lora")), "vae: v is not a sd15 VAE"),
        (
            JobModelRefs(ref("m", "checkpoint"), restorer=ref("r", "upscaler", None)),
            "restoreFaces.model: r is of type upscaler, not restorer",
        ),
        (
            JobModelRefs(ref("m", "checkpoint"), safety=ref("s", "restorer", None)),
            "safetyModel: s is of type restorer, not safety",
        ),
    ],
)
def test_each_added_model_is_checked(models: JobModelRefs, problem: str) -> None:
    assert incompatibilities(models, Mode.TXT2IMG) == [problem]
