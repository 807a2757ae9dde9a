"""An A1111 request as a GenerationJobSpec: refused (refusals), or translated field by
field, the spec's own rules failing as 422s on A1111's field names."""

from typing import Any

from pydantic import ValidationError

from diffleet_api.doors.a1111.errors import CHECKPOINT_FIELD, renamed
from diffleet_api.doors.a1111.refusals import LATENT_UPSCALERS, refusals
from diffleet_api.doors.a1111.sampling import sampler_of
from diffleet_api.doors.a1111.schemas import (
    A1111GenerationRequest,
    A1111Img2ImgRequest,
    A1111Txt2ImgRequest,
)
from diffleet_api.errors import FieldError, invalid, invalid_from
from diffleet_core.resources.generation_job import GenerationJobSpec, HiresFixSpec, Mode

VAE_DEFAULTS = (None, "", "Automatic", "None")  # override_settings.sd_vae's "no VAE"


def requested_vae(request: A1111GenerationRequest) -> str | None:
    chosen = (request.override_settings or {}).get("sd_vae")
    return chosen if isinstance(chosen, str) and chosen not in VAE_DEFAULTS else None


def hires_fix(request: A1111Txt2ImgRequest) -> HiresFixSpec | None:
    if not request.enable_hr:
        return None
    latent = (request.hr_upscaler or "Latent").startswith(LATENT_UPSCALERS)
    fields: dict[str, Any] = {
        "scale": request.hr_scale,
        "steps": request.hr_second_pass_steps or request.steps,
        "latent": latent,
    }
    if request.denoising_strength is not None:
        fields["strength"] = request.denoising_strength
    return HiresFixSpec.model_validate(fields)


def spec_of(request: A1111GenerationRequest, model: str | None, **fields: Any) -> GenerationJobSpec:
    """The job of `request` on `model` (None: none named, and no default); `fields`: its
    mode's own (mode, initImage, ...). Refused with 422s naming A1111's fields."""
    errors = refusals(request)
    if errors:
        raise invalid(errors)
    sampler = sampler_of(request)
    if model is None:
        message = "no checkpoint: name one here, or set the caller's default with POST options"
        raise invalid([FieldError(field=CHECKPOINT_FIELD, rule="required", message=message)])
    common: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "guidance_scale": request.cfg_scale,
        "sampler": sampler,
        "batch_size": request.batch_size,
    }
    if request.seed >= 0:
        common["seed"] = request.seed
    if request.styles:
        common["style"] = request.styles[0]
    vae = requested_vae(request)
    if vae is not None:
        common["vae"] = vae
    try:
        return GenerationJobSpec.model_validate(common | fields)
    except ValidationError as error:
        raise renamed(invalid_from(error)) from error


def txt2img_spec(request: A1111Txt2ImgRequest, model: str | None) -> GenerationJobSpec:
    try:
        hires = hires_fix(request)
    except ValidationError as error:
        raise renamed(invalid_from(error, ("hiresFix",))) from error
    return spec_of(request, model, **({"hires_fix": hires} if hires else {}))


def img2img_spec(
    request: A1111Img2ImgRequest, model: str | None, init_image: str, mask_image: str | None
) -> GenerationJobSpec:
    if mask_image is None:
        return spec_of(
            request,
            model,
            mode=Mode.IMG2IMG,
            init_image=init_image,
            strength=request.denoising_strength,
        )
    return spec_of(
        request,
        model,
        mode=Mode.INPAINT,
        init_image=init_image,
        mask_image=mask_image,
        strength=request.denoising_strength,
    )
