"""The fields of an A1111 request that ask for what the door does not do: each a 422
naming the field (`"rule": "unsupported"`). Their default, no-op values pass."""

from typing import Any

from diffleet_api.doors.a1111.errors import refused
from diffleet_api.doors.a1111.schemas import (
    A1111GenerationRequest,
    A1111Img2ImgRequest,
    A1111Txt2ImgRequest,
)
from diffleet_api.errors import FieldError

SAME = ("", "Use same checkpoint", "Use same sampler", "Use same scheduler")
LATENT_UPSCALERS = ("Latent",)  # A1111's "Latent", "Latent (bicubic)", ... prefix
PIXEL_UPSCALERS = ("Lanczos",)


def refusals(request: A1111GenerationRequest) -> list[FieldError]:
    """Each field of `request` that asks for what the door does not do."""
    found = []
    if request.n_iter != 1:
        found.append(refused("n_iter", "one iteration per request; use batch_size (up to 8)"))
    if request.tiling:
        found.append(refused("tiling", "seamless tiling is not supported"))
    if request.restore_faces:
        found.append(
            refused(
                "restore_faces",
                "no face restorer is configured for this door; POST /v1/jobs with"
                " restoreFaces names one",
            )
        )
    if request.subseed_strength:
        found.append(refused("subseed_strength", "variation seeds are not supported; use 0"))
    for field in ("seed_resize_from_h", "seed_resize_from_w"):
        if getattr(request, field) > 0:
            found.append(refused(field, "resizing the seed is not supported; use -1"))
    if request.s_churn:
        found.append(refused("s_churn", "sampler churn is not supported; use 0"))
    if request.s_noise not in (None, 1.0):
        found.append(refused("s_noise", "sampler noise is not supported; use 1"))
    if request.script_name:
        found.append(refused("script_name", "scripts are not supported (GET /scripts)"))
    found += [
        refused(f"alwayson_scripts.{name}", "scripts are not supported (GET /scripts)")
        for name, value in (request.alwayson_scripts or {}).items()
        if enabled_script(value)
    ]
    if request.styles and len(request.styles) > 1:
        found.append(refused("styles", "at most one style (a StylePreset)"))
    found += settings_refusals(request.override_settings or {})
    if isinstance(request, A1111Txt2ImgRequest):
        found += hires_refusals(request)
    if isinstance(request, A1111Img2ImgRequest):
        found += img2img_refusals(request)
    return found


def enabled_script(value: Any) -> bool:
    """An always-on script's entry that does something (webuiapi sends `{"args": []}` or
    `{"args": [False]}` for an extension it knows but does not use)."""
    args = value.get("args") if isinstance(value, dict) else None
    return not (isinstance(args, list) and (not args or args[0] is False))


def settings_refusals(settings: dict[str, Any]) -> list[FieldError]:
    found = []
    for key, value in settings.items():
        field = f"override_settings.{key}"
        if key == "sd_model_checkpoint" and not isinstance(value, str | None):
            found.append(FieldError(field=field, rule="type", message="a checkpoint's name"))
        elif key == "sd_vae" and not isinstance(value, str | None):
            found.append(FieldError(field=field, rule="type", message="a VAE's name"))
        elif key == "CLIP_stop_at_last_layers" and value not in (None, 1):
            found.append(refused(field, "clip skip is not supported; use 1"))
        elif key not in ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"):
            found.append(
                refused(
                    field, "not supported; override_settings takes sd_model_checkpoint and sd_vae"
                )
            )
    return found


def hires_refusals(request: A1111Txt2ImgRequest) -> list[FieldError]:
    found = []
    if request.firstphase_width or request.firstphase_height:
        found.append(refused("firstphase_width", "use width, height and hr_scale"))
    if not request.enable_hr:
        return found
    upscaler = request.hr_upscaler or "Latent"
    if not upscaler.startswith(LATENT_UPSCALERS + PIXEL_UPSCALERS):
        found.append(refused("hr_upscaler", "Latent (the latents) or Lanczos (the image)"))
    if request.hr_resize_x or request.hr_resize_y:
        found.append(refused("hr_resize_x", "use hr_scale"))
    for field in ("hr_checkpoint_name", "hr_sampler_name", "hr_scheduler"):
        if (getattr(request, field) or "") not in SAME:
            found.append(refused(field, "the second pass uses the first pass's"))
    for field, first in (("hr_prompt", "prompt"), ("hr_negative_prompt", "negative_prompt")):
        if getattr(request, field) not in ("", getattr(request, first)):
            found.append(refused(field, f"the second pass uses {first}"))
    return found


def img2img_refusals(request: A1111Img2ImgRequest) -> list[FieldError]:
    found = []
    if len(request.init_images) > 1:
        found.append(refused("init_images", "one init image per request"))
    if request.resize_mode != 0:
        found.append(refused("resize_mode", "only 0 (just resize to width x height)"))
    if request.initial_noise_multiplier not in (None, 1.0):
        found.append(refused("initial_noise_multiplier", "not supported; use 1"))
    return found
