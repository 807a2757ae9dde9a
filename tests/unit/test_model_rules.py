"""The model rules shared by the API, the operator and the worker: where a model's name
is looked up, and which models run together."""

import pytest

from diffleet_core.messages import ModelRef
from diffleet_core.model_rules import JobModelRefs, incompatibilities, lookup_namespaces
from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType

TXT2IMG = GenerationJobSpec(model="m", prompt="a red circle")
CONTROLLED = GenerationJobSpec.model_validate(
    {
        "model": "m",
        "prompt": "a red circle",
        "controlNet": {"model": "c", "image": "s3://inputs/c.png"},
    }
)
UPSCALE = GenerationJobSpec.model_validate(
    {"mode": "upscale", "initImage": "s3://inputs/i.png", "upscale": {"model": "u"}}
)


def ref(
    name: str, type: str, base: str | None = "sd15", control: ControlType | None = None
) -> ModelRef:
    return ModelRef(
        namespace="ns",
        name=name,
        source=f"s3://models/{name}.safetensors",
        format=ModelFormat.SAFETENSORS,
        type=ModelType(type),
        base_model=BaseModelFamily(base) if base else None,
        control_type=control,
        digest="sha256:" + "0" * 64,
    )


def test_a_name_is_looked_up_in_its_namespace_then_the_systems() -> None:
    assert lookup_namespaces("team-a", "diffleet-system") == ("team-a", "diffleet-system")
    assert lookup_namespaces("diffleet-system", "diffleet-system") == ("diffleet-system",)


def test_models_of_one_family_fit() -> None:
    models = JobModelRefs(
        ref("m", "checkpoint"),
        [ref("l", "lora")],
        [ref("c", "controlnet")],
        embeddings=[ref("e", "embedding")],
        vae=ref("v", "vae"),
        upscaler=ref("u", "upscaler", None),
        restorer=ref("r", "restorer", None),
        safety=ref("s", "safety", None),
    )
    assert incompatibilities(models, CONTROLLED) == []


def test_mode_upscale_runs_an_upscaler_alone() -> None:
    upscaler = ref("u", "upscaler", None)
    assert incompatibilities(JobModelRefs(upscaler, upscaler=upscaler), UPSCALE) == []
    checkpoint = ref("m", "checkpoint")
    assert incompatibilities(JobModelRefs(checkpoint, upscaler=checkpoint), UPSCALE) == [
        "upscale.model: m is of type checkpoint, not upscaler"
    ]


@pytest.mark.parametrize(
    ("model", "loras", "control_net", "problem"),
    [
        (ref("m", "lora"), [], None, "model: m is a lora, not a checkpoint"),
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
    controls = [control_net] if control_net else []
    job = CONTROLLED if control_net else TXT2IMG
    assert incompatibilities(JobModelRefs(model, loras, controls), job) == [problem]


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
    assert incompatibilities(models, TXT2IMG) == [problem]


def test_a_controlnet_of_another_type_than_its_entry_asks_is_named() -> None:
    job = GenerationJobSpec.model_validate(
        {
            "model": "m",
            "prompt": "a red circle",
            "controlNets": [
                {"model": "edges", "image": "s3://inputs/c.png", "type": "canny"},
                {"model": "depth", "image": "s3://inputs/d.png", "type": "canny"},
            ],
        }
    )
    controls = [ref("edges", "controlnet", control=ControlType.CANNY)]
    controls.append(ref("depth", "controlnet", control=ControlType.DEPTH))
    assert incompatibilities(JobModelRefs(ref("m", "checkpoint"), control_nets=controls), job) == [
        "controlNets[1].type: depth is a depth ControlNet, not canny"
    ]


def test_an_svd_checkpoint_runs_only_in_mode_img2vid() -> None:
    svd = ref("svd", "checkpoint", "svd")
    clip = GenerationJobSpec.model_validate(
        {"model": "svd", "mode": "img2vid", "initImage": "s3://inputs/i.png", "video": {}}
    )
    assert incompatibilities(JobModelRefs(svd), clip) == []
    assert incompatibilities(JobModelRefs(svd), TXT2IMG) == [
        "model: svd is an svd checkpoint: it runs only in mode img2vid"
    ]
    assert incompatibilities(JobModelRefs(ref("m", "checkpoint")), clip) == [
        "model: m is not an svd checkpoint (mode img2vid needs one)"
    ]
