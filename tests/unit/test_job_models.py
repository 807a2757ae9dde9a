"""A job's models at admission and placement: every model its spec names (and its
namespace's safety model, its ControlNets' detectors, its IP-Adapters' image encoder)
resolved, refused when they cannot run together or a preprocessor cannot run, and the
VRAM placement asks for (a video's frames included)."""

from collections.abc import Mapping
from typing import Any

from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec, Tier
from diffleet_core.resources.gpu_pool import GPUPoolSpec
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.queue.admission import JobModels, NotReady, resolve_job_models
from diffleet_operator.scheduler.eligibility import job_requirements, pool_fits

SYSTEM = "diffleet-system"
INIT = "s3://diffleet-uploads/tenants/team/a.png"


def model(
    name: str, model_type: str, vram: float, family: str | None = "sd15", **spec: Any
) -> dict[str, Any]:
    """A Ready ModelCache of the platform."""
    fields: dict[str, Any] = {"type": model_type, "vramGiB": vram, "format": "safetensors"}
    if family is not None:
        fields["baseModel"] = family
    return {
        "metadata": {"namespace": SYSTEM, "name": name},
        "spec": {"source": f"s3://models/{name}.safetensors"} | fields | spec,
        "status": {"phase": "Ready", "digest": f"sha256-{name}"},
    }


def index(*bodies: Mapping[str, Any]) -> ModelIndex:
    models = ModelIndex()
    for body in bodies:
        models.observe(body)
    return models


MODELS = index(
    model("sd", "checkpoint", 4.0),
    model("xl", "checkpoint", 8.0, family="sdxl"),
    model("ink", "lora", 0.5),
    model("easyneg", "embedding", 0.1),
    model("mse", "vae", 0.5),
    model("xl-vae", "vae", 0.5, family="sdxl"),
    model("esrgan", "upscaler", 1.0, family=None),
    model("gfpgan", "restorer", 1.5, family=None),
    model("checker", "safety", 0.25, family=None, format="diffusers"),
    model("cn-depth", "controlnet", 1.5, controlType="depth"),
    model("cn-canny", "controlnet", 1.5, controlType="canny"),
    model("dpt", "detector", 0.5, family=None, format="diffusers", controlType="depth"),
    model("ip", "ip-adapter", 0.1, imageEncoder="clip"),
    model("ip-plus", "ip-adapter", 0.1, imageEncoder="clip-big"),
    model("clip", "image-encoder", 1.0, family=None, format="diffusers"),
    model("svd", "checkpoint", 5.0, family="svd"),
    model("motion", "motion-adapter", 1.0, format="diffusers"),
    model("matte", "background-remover", 0.5, family=None, format="diffusers"),
)
IMAGE = "s3://diffleet-uploads/tenants/team/b.png"


def spec(**fields: Any) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate({"model": "sd", "prompt": "a cat"} | fields)


def resolved(job: GenerationJobSpec, safety: str | None = None) -> JobModels:
    found = resolve_job_models(MODELS, "team", job, SYSTEM, safety)
    assert isinstance(found, JobModels), found
    return found


def test_every_model_the_spec_names_is_resolved_and_reaches_the_order() -> None:
    job = spec(
        loras=[{"model": "ink"}],
        embeddings=["easyneg"],
        vae="mse",
        upscale={"model": "esrgan"},
        restoreFaces={"model": "gfpgan"},
    )
    refs = resolved(job, safety="checker").refs
    assert refs.model.name == "sd"
    assert [ref.name for ref in refs.loras] == ["ink"]
    assert [ref.name for ref in refs.embeddings] == ["easyneg"]
    assert (refs.vae and refs.vae.name, refs.upscaler and refs.upscaler.name) == ("mse", "esrgan")
    assert refs.restorer is not None
    assert refs.restorer.name == "gfpgan"
    assert refs.safety is not None
    assert refs.safety.digest == "sha256-checker"
    assert resolved(job, safety="checker").incompatibility(job) is None


def test_a_missing_model_names_itself_and_the_job_waits() -> None:
    missing = resolve_job_models(MODELS, "team", spec(vae="gone"), SYSTEM)
    assert isinstance(missing, NotReady)
    assert missing.reason is Reason.MODEL_NOT_FOUND
    assert "'gone'" in missing.message
    policy_model = resolve_job_models(MODELS, "team", spec(), SYSTEM, "strict")
    assert isinstance(policy_model, NotReady)
    assert policy_model.model == "strict"


def test_models_that_cannot_run_together_are_named() -> None:
    job = spec(vae="xl-vae", restoreFaces={"model": "esrgan"})
    problem = resolved(job, safety="mse").incompatibility(job)
    assert problem is not None
    # One sentence per problem, each naming its field and model.
    assert [sentence.split()[:2] for sentence in problem.split("; ")] == [
        ["vae:", "xl-vae"],
        ["restoreFaces.model:", "esrgan"],
        ["safetyModel:", "mse"],
    ]


def test_placement_needs_the_vram_of_every_model_held_in_gpu_memory() -> None:
    job = spec(
        loras=[{"model": "ink"}],
        embeddings=["easyneg"],
        vae="mse",
        upscale={"model": "esrgan"},
        restoreFaces={"model": "gfpgan"},
    )
    needs = job_requirements(resolved(job, safety="checker"), Tier.PRO, "any")
    # checkpoint 4 + VAE 0.5 + upscaler 1 + restorer 1.5; adapters and safety aside.
    assert needs.vram_gib == 7.0
    assert needs.model_digest == "sha256-sd"


def test_mode_upscale_is_placed_by_its_upscaler() -> None:
    job = spec(model=None, prompt="", mode="upscale", initImage=INIT, upscale={"model": "esrgan"})
    models = resolved(job)
    assert models.model.ref.name == "esrgan"
    assert models.upscaler == models.model
    assert models.incompatibility(job) is None
    needs = job_requirements(models, Tier.FREE, "any")
    assert (needs.model_digest, needs.vram_gib) == ("sha256-esrgan", 1.0)


def test_controlnets_detectors_and_ip_adapters_reach_the_order_and_count_in_vram() -> None:
    job = spec(
        controlNets=[
            {"model": "cn-depth", "image": IMAGE},
            {"model": "cn-canny", "image": IMAGE, "type": "canny"},
        ],
        ipAdapters=[{"model": "ip", "image": IMAGE}],
    )
    models = resolved(job)
    assert models.incompatibility(job) is None
    refs = models.refs
    assert [ref.name for ref in refs.control_nets] == ["cn-depth", "cn-canny"]
    assert models.control_types == [ControlType.DEPTH, ControlType.CANNY]
    # Only depth is detected: canny is computed without weights.
    assert [ref.name for ref in refs.detectors] == ["dpt"]
    assert [ref.name for ref in refs.ip_adapters] == ["ip"]
    assert refs.image_encoder is not None
    assert refs.image_encoder.name == "clip"
    # checkpoint 4 + ControlNets 1.5 + 1.5 + detector 0.5 + adapter 0.1 + encoder 1.
    assert job_requirements(models, Tier.PRO, "any").vram_gib == 8.6


def test_a_preprocessor_that_cannot_run_and_adapters_of_two_encoders_are_refused() -> None:
    job = spec(
        controlNet={"model": "cn-depth", "image": IMAGE, "type": "openpose"},
        ipAdapters=[{"model": "ip", "image": IMAGE}, {"model": "ip-plus", "image": IMAGE}],
    )
    # Each problem named by its field, those resolving found first.
    assert resolved(job).incompatibility(job) == "; ".join(
        [
            "controlNet.preprocess: no openpose preprocessor runs in diffleet; send a processed"
            " image with preprocess none",
            "ipAdapters: all of a job's IP-Adapters must share one image encoder (ip uses"
            " clip, ip-plus uses clip-big)",
            "controlNet.type: cn-depth is a depth ControlNet, not openpose",
        ]
    )


def test_depth_auto_without_a_detector_is_refused_and_waits_for_one_not_ready() -> None:
    job = spec(controlNets=[{"model": "cn-depth", "image": IMAGE}])
    without = index(*(m for m in MODELS.all() if m["metadata"]["name"] != "dpt"))
    models = resolve_job_models(without, "team", job, SYSTEM)
    assert isinstance(models, JobModels)
    assert models.incompatibility(job) == (
        "controlNets[0].preprocess: no depth detector is registered (a ModelCache of type"
        " detector with controlType depth); register one, or send a processed image with"
        " preprocess none"
    )
    unprocessed = spec(controlNets=[{"model": "cn-depth", "image": IMAGE, "preprocess": "none"}])
    processed = resolve_job_models(without, "team", unprocessed, SYSTEM)
    assert isinstance(processed, JobModels)
    assert processed.incompatibility(unprocessed) is None
    pending = model("dpt-2", "detector", 0.5, family=None, format="diffusers", controlType="depth")
    pending["status"] = {"phase": "Downloading"}
    waiting = resolve_job_models(index(*without.all(), pending), "team", job, SYSTEM)
    assert isinstance(waiting, NotReady)
    assert waiting.model == "dpt-2"


def test_a_video_needs_vram_by_frames_and_size_and_a_small_pool_is_refused() -> None:
    def clip(frames: int) -> JobModels:
        return resolved(
            spec(model="svd", mode="img2vid", prompt="", initImage=INIT, width=1024,
                 height=576, video={"frames": frames})
        )  # fmt: skip

    needs = job_requirements(clip(25), Tier.PRO, "any")
    # 5 GiB of weights + 25 frames x 0.59 megapixels x 1.4 GiB.
    assert round(needs.vram_gib, 1) == 25.6
    small = GPUPoolSpec.model_validate({"gpuType": "l4", "vramGiB": 24, "maxReplicas": 1})
    large = GPUPoolSpec.model_validate({"gpuType": "a100", "vramGiB": 80, "maxReplicas": 1})
    assert not pool_fits("l4", small, needs)
    assert pool_fits("a100", large, needs)
    assert job_requirements(clip(8), Tier.PRO, "any").vram_gib < 24


def test_a_clip_runs_with_its_motion_adapter_and_an_image_with_its_background_remover() -> None:
    clip = spec(
        mode="txt2vid", width=256, height=256, video={"frames": 16, "motionAdapter": "motion"}
    )
    models = resolved(clip)
    assert models.incompatibility(clip) is None
    assert models.refs.motion_adapter is not None
    assert models.refs.motion_adapter.name == "motion"
    # checkpoint 4 + adapter 1 + 16 frames x 0.066 megapixels x 1.4 GiB.
    assert round(job_requirements(models, Tier.PRO, "any").vram_gib, 2) == 6.47
    matted = spec(removeBackground={"model": "matte"})
    refs = resolved(matted).refs
    assert refs.background_remover is not None
    assert refs.background_remover.name == "matte"
    assert job_requirements(resolved(matted), Tier.PRO, "any").vram_gib == 4.5
