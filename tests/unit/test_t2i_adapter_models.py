"""T2I-Adapters at admission and placement: named in controlNets like ControlNets, they
fit a txt2img job and count in its VRAM as ControlNets do; each rule diffusers' adapter
pipelines impose refuses a job with the field named (diffleet_core.model_rules, shared
by the operator, the REST door and the worker)."""

from typing import Any

import pytest

from diffleet_core.resources.generation_job import GenerationJobSpec, Tier
from diffleet_operator.queue.admission import JobModels, resolve_job_models
from diffleet_operator.scheduler.eligibility import job_requirements
from tests.unit.test_job_models import SYSTEM, index, model

MODELS = index(
    model("sd", "checkpoint", 4.0),
    model("xl", "checkpoint", 8.0, family="sdxl"),
    model("t2i-canny", "t2i-adapter", 0.3, format="diffusers", controlType="canny"),
    model("t2i-depth", "t2i-adapter", 0.3, format="diffusers", controlType="depth"),
    model("t2i-xl", "t2i-adapter", 0.3, family="sdxl", format="diffusers", controlType="canny"),
    model("cn-canny", "controlnet", 1.5, controlType="canny"),
    model("ip", "ip-adapter", 0.1, imageEncoder="clip"),
    model("ip-xl", "ip-adapter", 0.1, family="sdxl", imageEncoder="clip"),
    model("clip", "image-encoder", 1.0, family=None, format="diffusers"),
)
IMAGE = "s3://diffleet-uploads/tenants/team/b.png"
CANNY = {"model": "t2i-canny", "image": IMAGE}
# A depth map sent as it is: no detector needed.
DEPTH = {"model": "t2i-depth", "image": IMAGE, "preprocess": "none"}


def resolved(**fields: Any) -> tuple[JobModels, GenerationJobSpec]:
    job = GenerationJobSpec.model_validate({"model": "sd", "prompt": "a cat"} | fields)
    found = resolve_job_models(MODELS, "team", job, SYSTEM)
    assert isinstance(found, JobModels), found
    return found, job


def test_t2i_adapters_fit_a_txt2img_job_and_count_in_its_vram_as_controlnets_do() -> None:
    models, job = resolved(controlNets=[CANNY, DEPTH])
    assert models.incompatibility(job) is None
    assert [(ref.name, ref.type) for ref in models.refs.control_nets] == [
        ("t2i-canny", "t2i-adapter"),
        ("t2i-depth", "t2i-adapter"),
    ]
    assert models.control_types == ["canny", "depth"]
    # checkpoint 4 + 0.3 per adapter.
    assert round(job_requirements(models, Tier.PRO, "any").vram_gib, 2) == 4.6
    # sdxl takes image prompts beside its adapters.
    models, job = resolved(
        model="xl",
        controlNets=[{"model": "t2i-xl", "image": IMAGE}],
        ipAdapters=[{"model": "ip-xl", "image": IMAGE}],
    )
    assert models.incompatibility(job) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"controlNets": [CANNY, {"model": "cn-canny", "image": IMAGE}]},
            "controlNets[1].model: cn-canny is a ControlNet and t2i-canny a T2I-Adapter: a"
            " job's entries are all ControlNets or all T2I-Adapters",
        ),
        (
            {"mode": "img2img", "initImage": IMAGE, "controlNets": [CANNY]},
            "controlNets[0].model: t2i-canny is a T2I-Adapter: T2I-Adapters run only in mode"
            " txt2img",
        ),
        (
            {"controlNets": [CANNY | {"guidanceStart": 0.2}]},
            "controlNets[0].guidanceStart: t2i-canny is a T2I-Adapter, which steers every step"
            " (guidanceStart must be 0)",
        ),
        (
            {"controlNet": CANNY | {"guidanceEnd": 0.8}},
            "controlNet.guidanceEnd: t2i-canny is a T2I-Adapter, which steers every step"
            " (guidanceEnd must be 1)",
        ),
        (
            {"controlNets": [CANNY], "hiresFix": {}},
            "hiresFix: not allowed with T2I-Adapters (its second pass is image to image, and"
            " diffusers runs T2I-Adapters in text to image only)",
        ),
        (
            {"controlNets": [CANNY], "ipAdapters": [{"model": "ip", "image": IMAGE}]},
            "ipAdapters: not allowed with T2I-Adapters on sd15 (diffusers' SD 1.5 T2I-Adapter"
            " pipeline takes no image prompt)",
        ),
        (
            {"controlNets": [{"model": "t2i-xl", "image": IMAGE}]},
            "controlNets[0].model: t2i-xl is not a sd15 T2I-Adapter",
        ),
        (
            {"controlNets": [CANNY | {"type": "depth", "preprocess": "none"}]},
            "controlNets[0].type: t2i-canny is a canny T2I-Adapter, not depth",
        ),
    ],
    ids=["mixed", "img2img", "guidance-start", "guidance-end", "hires", "image-prompt",
         "other-family", "other-type"],
)  # fmt: skip
def test_each_t2i_adapter_rule_refuses_the_job_naming_the_field(
    fields: dict[str, Any], message: str
) -> None:
    models, job = resolved(**fields)
    assert models.incompatibility(job) == message
