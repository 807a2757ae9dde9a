"""A job's models at admission and placement: every model its spec names (and its
namespace's safety model) resolved, refused when they cannot run together, and the VRAM
placement asks for."""

from typing import Any

from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import GenerationJobSpec, Tier
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.queue.admission import JobModels, NotReady, resolve_job_models
from diffleet_operator.scheduler.eligibility import job_requirements

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


def index(*bodies: dict[str, Any]) -> ModelIndex:
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
)


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
