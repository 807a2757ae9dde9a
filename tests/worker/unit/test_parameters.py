"""The parameters text of an output: Automatic1111's infotext, with its key names for the
features it has (hires fix, VAE, embeddings, postprocessing upscale, face restoration)."""

from datetime import UTC, datetime
from typing import Any

from diffleet_core.messages import DispatchedJob, JobRef, ModelRef
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_worker.parameters import parameters_text

INIT = "s3://uploads/i.png"


def ref(name: str, model_type: str, digest: str, family: str | None = "sd15") -> ModelRef:
    return ModelRef(
        namespace="ns",
        name=name,
        source=f"s3://models/{name}",
        format="safetensors",
        type=model_type,
        base_model=family,
        digest=digest,
    )


CHECKPOINT = ref("sd15-base", "checkpoint", "0123456789abcdef")


def order(spec: dict[str, Any], **refs: Any) -> DispatchedJob:
    return DispatchedJob(
        job=JobRef(uid="u", namespace="ns", name="j", attempt=1),
        spec=GenerationJobSpec.model_validate(
            {"model": "sd15-base", "prompt": "a red circle"} | spec
        ),
        seed=1,
        model=refs.pop("model", CHECKPOINT),
        output_bucket="out",
        deadline=datetime.now(UTC),
        **refs,
    )


def settings_line(text: str) -> str:
    return text.split("\n")[-1]


def test_parameters_text_is_the_widely_read_format() -> None:
    text = parameters_text(
        order(
            {
                "negativePrompt": "blurry",
                "steps": 20,
                "guidanceScale": 7.5,
                "width": 512,
                "height": 768,
            }
        ),
        seed=42,
        strength=None,
    )
    assert text == (
        "a red circle\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x768, "
        "Model hash: 0123456789, Model: sd15-base"
    )


def test_parameters_name_strength_loras_and_controlnet_when_used() -> None:
    text = parameters_text(
        order(
            {
                "mode": "img2img",
                "initImage": INIT,
                "strength": 0.6,
                "controlNets": [
                    {"model": "cn", "image": "s3://uploads/c.png"},
                    {
                        "model": "cn-depth",
                        "image": "s3://uploads/d.png",
                        "preprocess": "none",
                        "conditioningScale": 0.5,
                        "guidanceStart": 0.1,
                        "guidanceEnd": 0.8,
                    },
                ],
                "loras": [{"model": "ink", "weight": 0.8}],
            },
            loras=[ref("ink", "lora", "cd" * 32)],
            control_nets=[
                ref("cn", "controlnet", "c1" * 32),
                ref("cn-depth", "controlnet", "c2" * 32),
            ],
            control_types=["canny", "depth"],
        ),
        seed=1,
        strength=0.6,
    )
    assert "Denoising strength: 0.6" in text
    assert 'Lora hashes: "ink: cdcdcdcdcd"' in text
    assert 'Lora weights: "ink: 0.8"' in text
    assert (
        'ControlNet 0: "Module: canny, Model: cn, Weight: 1, Guidance Start: 0, Guidance End: 1"'
    ) in text
    assert (
        'ControlNet 1: "Module: none, Model: cn-depth, Weight: 0.5, Guidance Start: 0.1, '
        'Guidance End: 0.8"'
    ) in text


def test_hires_fix_vae_and_embeddings_in_a1111_keys() -> None:
    text = parameters_text(
        order(
            {
                "hiresFix": {"scale": 1.5, "strength": 0.4, "steps": 6, "latent": False},
                "vae": "ft-mse",
                "embeddings": ["easyneg", "style"],
            },
            vae=ref("ft-mse", "vae", "ee" * 32),
            embeddings=[
                ref("easyneg", "embedding", "aa" * 32),
                ref("style", "embedding", "bb" * 32),
            ],
        ),
        seed=3,
        strength=None,
    )
    assert settings_line(text) == (
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 512x512, "
        "Model hash: 0123456789, Model: sd15-base, VAE hash: eeeeeeeeee, VAE: ft-mse, "
        "Denoising strength: 0.4, Hires upscale: 1.5, Hires steps: 6, Hires upscaler: Lanczos, "
        'TI hashes: "easyneg: aaaaaaaaaa, style: bbbbbbbbbb"'
    )
    latent = order({"hiresFix": {}})
    assert "Hires upscaler: Latent" in parameters_text(latent, seed=3, strength=None)


def test_outpaint_upscale_and_face_restoration() -> None:
    text = parameters_text(
        order(
            {
                "mode": "outpaint",
                "initImage": INIT,
                "outpaint": {"right": 128, "top": 8},
                "upscale": {"model": "esrgan", "scale": 2},
                "restoreFaces": {"model": "gfpgan", "strength": 0.5},
            },
            upscaler=ref("esrgan", "upscaler", "11" * 32, None),
            restorer=ref("gfpgan", "restorer", "22" * 32, None),
        ),
        seed=3,
        strength=0.75,
    )
    fields = settings_line(text)
    assert (
        "Seed: 3, Face restoration: gfpgan, Face restoration strength: 0.5, Size: 512x512" in fields
    )
    assert (
        'Denoising strength: 0.75, Outpaint: "Left: 0, Right: 128, Top: 8, Bottom: 0, Feather: 16"'
        in fields
    )
    assert fields.endswith("Postprocess upscale by: 2, Postprocess upscaler: esrgan")


def test_mode_upscale_names_the_input_size_and_the_upscaler_only() -> None:
    upscaler = ref("esrgan", "upscaler", "11" * 32, None)
    text = parameters_text(
        order(
            {
                "model": None,
                "prompt": "",
                "mode": "upscale",
                "initImage": INIT,
                "width": 64,
                "height": 96,
                "upscale": {"model": "esrgan"},
            },
            model=upscaler,
            upscaler=upscaler,
        ),
        seed=1,
        strength=None,
    )
    assert text == "Size: 64x96, Postprocess upscale by: 4, Postprocess upscaler: esrgan"


def test_an_empty_prompt_has_no_line_as_in_a1111() -> None:
    mask = "s3://uploads/m.png"
    text = parameters_text(
        order({"prompt": "", "mode": "inpaint", "initImage": INIT, "maskImage": mask}),
        seed=1,
        strength=0.75,
    )
    assert text.startswith("Steps: 20, ")
