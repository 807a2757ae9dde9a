"""The Automatic1111 web UI API (`/sdapi/v1`) as a door: its txt2img and img2img requests
become GenerationJobs of the caller's tenant (same submission as `POST /v1/jobs`), waited
for and answered as A1111 answers (`{images, parameters, info}`).

A1111 clients send many fields with their default, no-op values (webuiapi sends them
all): those are accepted. A field that asks for something diffleet does not do is a 422
naming it (`refusals`); fields A1111 does not have are ignored, as A1111 ignores them.
"""

import asyncio
import base64
import io
import json
import logging
import re
from datetime import datetime
from typing import Any, Literal

from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError
from fastapi import Request
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from diffleet_api import events, submission
from diffleet_api.deps import Principal
from diffleet_api.doors.a1111_images import InpaintingFill, decoded, inpaint_inputs
from diffleet_api.doors.jobs import (
    StillRunningError,
    caller_label,
    callers_jobs,
    door_tags,
    finished,
    output_images,
)
from diffleet_api.errors import (
    ApiError,
    Failure,
    FieldError,
    InvalidError,
    TooLargeError,
    invalid,
    invalid_from,
)
from diffleet_api.job_styles import styled_specs
from diffleet_api.model_registry import list_models
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_api.uploads import cleaned, store_image
from diffleet_core.resources.generation_job import (
    MAX_SEED,
    SAMPLER_LABELS,
    GenerationJobSpec,
    HiresFixSpec,
    JobPhase,
    Mode,
    Sampler,
)
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType

logger = logging.getLogger(__name__)

DOOR = "a1111"
PREFIX = "/sdapi/"  # the routes whose errors render_error shapes
HASH_LENGTH = 10  # A1111's short model hash, as the worker writes it in infotexts
TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]+\]$")
# How long GET progress listens on the progress exchange for a live preview of the
# caller's running job (a worker sends one every `preview_every_steps` steps).
PREVIEW_WAIT_SECONDS = 1.5
DEFAULT_SAMPLER = "Euler"  # A1111's sampler_index default
SCHEDULER_SUFFIXES = {"": "", "automatic": "", "karras": " Karras"}
SAME = ("", "Use same checkpoint", "Use same sampler", "Use same scheduler")
LATENT_UPSCALERS = ("Latent",)  # A1111's "Latent", "Latent (bicubic)", ... prefix
PIXEL_UPSCALERS = ("Lanczos",)
VAE_DEFAULTS = (None, "", "Automatic", "None")  # override_settings.sd_vae's "no VAE"
# An img2img request is checked before its images are stored: these stand for them.
PLACEHOLDER_URI = "s3://placeholder/image.png"
CHECKPOINT_FIELD = "override_settings.sd_model_checkpoint"
# diffleet's spec fields (as submission's errors name them) as A1111 names them.
A1111_FIELDS = {
    "model": CHECKPOINT_FIELD,
    "negativePrompt": "negative_prompt",
    "guidanceScale": "cfg_scale",
    "sampler": "sampler_name",
    "batchSize": "batch_size",
    "initImage": "init_images",
    "maskImage": "mask",
    "strength": "denoising_strength",
    "style": "styles",
    "vae": "override_settings.sd_vae",
    "hiresFix.scale": "hr_scale",
    "hiresFix.strength": "denoising_strength",
    "hiresFix.steps": "hr_second_pass_steps",
}


class GenerationRequest(BaseModel):
    """The fields txt2img and img2img share, with A1111's names and defaults."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(default=-1, description="-1: random (info reports the seed used)")
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    script_name: str | None = None
    script_args: list[Any] | None = None
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = None


class Txt2ImgRequest(GenerationRequest):
    enable_hr: bool = False
    denoising_strength: float | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgRequest(GenerationRequest):
    init_images: list[str] = Field(min_length=1, description="One base64 image (or data URI)")
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = Field(default=None, description="base64 image: white = repaint")
    mask_blur: int = Field(default=4, ge=0, le=64)
    inpainting_fill: Literal[0, 1, 2, 3] = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: Literal[0, 1] = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


class ImageAnswer(BaseModel):
    images: list[str] = Field(description="base64 PNG images")
    parameters: dict[str, Any] = Field(description="The request, as A1111 echoes it")
    info: str = Field(description="JSON: seed, all_seeds, sampler_name, infotexts, ...")


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressAnswer(BaseModel):
    progress: float = Field(ge=0, le=1)
    eta_relative: float = Field(ge=0)
    state: ProgressState
    current_image: str | None = Field(description="base64 PNG: the latest live preview")
    textinfo: str | None = None


class SdModel(BaseModel):
    title: str = Field(description='"name [hash]", as sd_model_checkpoint may name it')
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str] = Field(default_factory=dict)


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class Options(BaseModel):
    """The A1111 options this door keeps: the caller's default checkpoint."""

    model_config = ConfigDict(extra="allow")

    sd_model_checkpoint: str | None = None


class Scripts(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class A1111ErrorBody(BaseModel):
    error: str = Field(description="The kind of error (validation, unauthenticated, ...)")
    detail: str
    body: str = ""
    errors: list[FieldError] = Field(default_factory=list)


class JobFailedError(ApiError):
    status, kind, title = 500, "job-failed", "The job failed"


class JobStillRunningError(ApiError):
    status, kind, title = 504, "job-still-running", "The job is still running"


# Errors


def render_error(_: Request, failure: Failure) -> JSONResponse:
    """A1111's error shape (its API answers `{error, detail, body, errors}`), with
    diffleet's statuses; field errors in `errors`."""
    body = A1111ErrorBody(error=failure.kind, detail=failure.detail, errors=failure.errors or [])
    return JSONResponse(body.model_dump(), status_code=failure.status, headers=failure.headers)


def a1111_field(field: str) -> str:
    """A spec field, as submission's errors (camelCase) or the spec's own validation
    (snake_case) name it, by its A1111 name."""
    camel = ".".join(to_camel(part) for part in field.split("."))
    return A1111_FIELDS.get(camel, field)


def renamed(error: InvalidError) -> InvalidError:
    """A 422 of the spec's rules, its fields named as the A1111 request names them."""
    found = [
        FieldError(field=a1111_field(item.field), rule=item.rule, message=item.message)
        for item in error.errors or []
    ]
    return invalid(found) if found else error


def refused(field: str, message: str) -> FieldError:
    return FieldError(field=field, rule="unsupported", message=message)


# Translation


def refusals(request: GenerationRequest) -> list[FieldError]:
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
    if isinstance(request, Txt2ImgRequest):
        found += hires_refusals(request)
    if isinstance(request, Img2ImgRequest):
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


def hires_refusals(request: Txt2ImgRequest) -> list[FieldError]:
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


def img2img_refusals(request: Img2ImgRequest) -> list[FieldError]:
    found = []
    if len(request.init_images) > 1:
        found.append(refused("init_images", "one init image per request"))
    if request.resize_mode != 0:
        found.append(refused("resize_mode", "only 0 (just resize to width x height)"))
    if request.initial_noise_multiplier not in (None, 1.0):
        found.append(refused("initial_noise_multiplier", "not supported; use 1"))
    return found


def sampler_of(request: GenerationRequest) -> Sampler:
    """A1111's sampler name (+ its newer `scheduler`, "Karras" say) as diffleet's."""
    label = request.sampler_name or request.sampler_index or DEFAULT_SAMPLER
    suffix = SCHEDULER_SUFFIXES.get((request.scheduler or "").lower())
    if suffix is None:
        message = f"{request.scheduler!r} is not a scheduler here: Automatic or Karras"
        raise invalid([FieldError(field="scheduler", rule="enum", message=message)])
    if suffix and not label.endswith(suffix):
        label += suffix
    by_name = {name.lower(): sampler for sampler, name in SAMPLER_LABELS.items()}
    by_name |= {sampler.value: sampler for sampler in Sampler}
    found = by_name.get(label.lower())
    if found is None:
        field = "scheduler" if suffix and label.removesuffix(suffix).lower() in by_name else None
        names = ", ".join(SAMPLER_LABELS.values())
        message = f"{label!r} is not a sampler here (GET /sdapi/v1/samplers): {names}"
        raise invalid([FieldError(field=field or "sampler_name", rule="enum", message=message)])
    return found


def checkpoint_name(value: str) -> str:
    """A checkpoint's ModelCache name, from its name or its A1111 title ("name [hash]")."""
    return TITLE_HASH.sub("", value.strip())


def requested_checkpoint(request: GenerationRequest) -> str | None:
    chosen = (request.override_settings or {}).get("sd_model_checkpoint")
    return checkpoint_name(chosen) if isinstance(chosen, str) and chosen else None


def requested_vae(request: GenerationRequest) -> str | None:
    chosen = (request.override_settings or {}).get("sd_vae")
    return chosen if isinstance(chosen, str) and chosen not in VAE_DEFAULTS else None


def hires_fix(request: Txt2ImgRequest) -> HiresFixSpec | None:
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


def spec_of(request: GenerationRequest, model: str | None, **fields: Any) -> GenerationJobSpec:
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


def txt2img_spec(request: Txt2ImgRequest, model: str | None) -> GenerationJobSpec:
    try:
        hires = hires_fix(request)
    except ValidationError as error:
        raise renamed(invalid_from(error, ("hiresFix",))) from error
    return spec_of(request, model, **({"hires_fix": hires} if hires else {}))


def img2img_spec(
    request: Img2ImgRequest, model: str | None, init_image: str, mask_image: str | None
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


def echoed(request: GenerationRequest) -> dict[str, Any]:
    """The request as A1111 echoes it in `parameters`: every field, the images only with
    include_init_images."""
    parameters = request.model_dump(mode="json")
    if isinstance(request, Img2ImgRequest) and not request.include_init_images:
        parameters |= {"init_images": None, "mask": None}
    return parameters


def job_timestamp(job: JobPublic) -> str:
    when: datetime = job.status.started_at or job.created_at
    return when.strftime("%Y%m%d%H%M%S")


def info_of(
    job: JobPublic,
    spec: GenerationJobSpec,
    request: GenerationRequest,
    infotexts: list[str],
) -> dict[str, Any]:
    """A1111's `info` (Processed.js()) of the finished job; `spec` is the job's, its style
    applied (the prompts as the worker ran them). Also job_id (follow it at /v1/jobs)
    and interrupted (the job was cancelled: no images)."""
    count = spec.batch_size
    seed = job.status.seed
    seeds = [] if seed is None else [(seed + index) % (MAX_SEED + 1) for index in range(count)]
    subseed = request.subseed if request.subseed >= 0 else -1
    strength = spec.hires_fix.strength if spec.hires_fix is not None else spec.strength
    digest = job.status.model_digest
    return {
        "prompt": spec.prompt,
        "all_prompts": [spec.prompt] * count,
        "negative_prompt": spec.negative_prompt,
        "all_negative_prompts": [spec.negative_prompt] * count,
        "seed": seed,
        "all_seeds": seeds,
        "subseed": subseed,
        "all_subseeds": [subseed] * len(seeds),
        "subseed_strength": 0,
        "width": spec.width,
        "height": spec.height,
        "sampler_name": SAMPLER_LABELS[spec.sampler],
        "cfg_scale": spec.guidance_scale,
        "steps": spec.steps,
        "batch_size": count,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": spec.model,
        "sd_model_hash": digest[:HASH_LENGTH] if digest else None,
        "sd_vae_name": spec.vae,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": strength if strength is not None else 0,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [spec.style] if spec.style else [],
        "job_timestamp": job_timestamp(job),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": "diffleet",
        "job_id": job.id,
        "interrupted": job.status.phase == JobPhase.CANCELLED,
    }


def infotext(data: bytes) -> str:
    """An output's `parameters` text chunk (what the worker writes, in A1111's format)."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.info.get("parameters")
    return text if isinstance(text, str) else ""


# The caller's default checkpoint (POST options)


async def default_checkpoint(runtime: Runtime, principal: Principal) -> str | None:
    """The caller's checkpoint from POST options, else the platform's door default."""
    async with runtime.pool.connection() as connection:
        cursor = await connection.execute(
            "select checkpoint from door_options"
            " where tenant_id = %s and door = %s and caller = %s",
            (principal.tenant.id, DOOR, caller_label(principal)),
        )
        row = await cursor.fetchone()
    chosen: str | None = row[0] if row else None
    return chosen or runtime.settings.door_default_model or None


async def set_default_checkpoint(runtime: Runtime, principal: Principal, value: str) -> None:
    """Checks that `value` is a checkpoint the tenant sees, then keeps it as the caller's."""
    name = checkpoint_name(value)
    if name not in {model.model_name for model in await checkpoints(runtime, principal)}:
        message = f"{name!r} is not a checkpoint this tenant sees (GET /sdapi/v1/sd-models)"
        field = FieldError(field="sd_model_checkpoint", rule="exists", message=message)
        raise invalid([field])
    async with runtime.pool.connection() as connection:
        await connection.execute(
            "insert into door_options (tenant_id, door, caller, checkpoint)"
            " values (%s, %s, %s, %s) on conflict (tenant_id, door, caller)"
            " do update set checkpoint = excluded.checkpoint, updated_at = now()",
            (principal.tenant.id, DOOR, caller_label(principal), name),
        )


async def checkpoints(runtime: Runtime, principal: Principal) -> list[SdModel]:
    """The image checkpoints the tenant sees (its own and the platform's)."""
    listed = await list_models(runtime, principal.tenant)
    found = []
    for model in listed.items:
        if model.spec.type != ModelType.CHECKPOINT or model.spec.base_model == BaseModelFamily.SVD:
            continue
        sha256 = model.status.digest or model.spec.sha256
        short = sha256[:HASH_LENGTH] if sha256 else None
        found.append(
            SdModel(
                title=f"{model.id} [{short}]" if short else model.id,
                model_name=model.id,
                hash=short,
                sha256=sha256,
                filename=model.spec.source,
            )
        )
    return found


async def options(runtime: Runtime, principal: Principal) -> Options:
    chosen = await default_checkpoint(runtime, principal)
    if chosen is None:
        return Options()
    titles = {model.model_name: model.title for model in await checkpoints(runtime, principal)}
    return Options(sd_model_checkpoint=titles.get(chosen, chosen))


async def update_options(runtime: Runtime, principal: Principal, given: dict[str, Any]) -> None:
    refused_keys = [
        refused(key, "not supported; POST options takes sd_model_checkpoint")
        for key in given
        if key != "sd_model_checkpoint"
    ]
    if refused_keys:
        raise invalid(refused_keys)
    value = given.get("sd_model_checkpoint")
    if value is None:
        return
    if not isinstance(value, str):
        message = "a checkpoint's name or title"
        raise invalid([FieldError(field="sd_model_checkpoint", rule="type", message=message)])
    await set_default_checkpoint(runtime, principal, value)


# Generating


async def model_of(
    runtime: Runtime, principal: Principal, request: GenerationRequest
) -> str | None:
    return requested_checkpoint(request) or await default_checkpoint(runtime, principal)


async def txt2img(runtime: Runtime, principal: Principal, request: Txt2ImgRequest) -> ImageAnswer:
    spec = txt2img_spec(request, await model_of(runtime, principal, request))
    return await generated(runtime, principal, spec, request)


async def img2img(runtime: Runtime, principal: Principal, request: Img2ImgRequest) -> ImageAnswer:
    model = await model_of(runtime, principal, request)
    # The request checked before its images are stored (their URIs are placeholders).
    img2img_spec(request, model, PLACEHOLDER_URI, PLACEHOLDER_URI if request.mask else None)
    init, mask = await stored_images(runtime, principal, request)
    spec = img2img_spec(request, model, init, mask)
    return await generated(runtime, principal, spec, request)


def image_bytes(runtime: Runtime, text: str, field: str) -> bytes:
    data = decoded(text, field)
    if len(data) > runtime.settings.upload_max_bytes:
        raise TooLargeError(f"{field} is over {runtime.settings.upload_max_bytes} bytes")
    return data


async def stored_images(
    runtime: Runtime, principal: Principal, request: Img2ImgRequest
) -> tuple[str, str | None]:
    """The init image (and mask) stored as the tenant's uploads: URIs for the spec. With
    a mask, both are prepared first (a1111_images.inpaint_inputs)."""
    tenant = principal.tenant
    init = image_bytes(runtime, request.init_images[0], "init_images")
    if request.mask is None:
        return (await store_image(runtime, tenant, init, "init_images")).uri, None
    mask = image_bytes(runtime, request.mask, "mask")
    max_pixels = runtime.settings.tier_limits[tenant.tier].upload_max_pixels
    clean_init = await asyncio.to_thread(cleaned, init, max_pixels, "init_images")
    clean_mask = await asyncio.to_thread(cleaned, mask, max_pixels, "mask")
    painted, blurred = await asyncio.to_thread(
        inpaint_inputs,
        clean_init.data,
        clean_mask.data,
        blur=request.mask_blur,
        invert=request.inpainting_mask_invert == 1,
        fill=InpaintingFill(request.inpainting_fill),
        seed=max(request.seed, 0),
    )
    init_upload = await store_image(runtime, tenant, painted, "init_images")
    mask_upload = await store_image(runtime, tenant, blurred, "mask")
    return init_upload.uri, mask_upload.uri


async def generated(
    runtime: Runtime, principal: Principal, spec: GenerationJobSpec, request: GenerationRequest
) -> ImageAnswer:
    """Submits the job as POST /v1/jobs does, waits for it, and answers A1111's way."""
    try:
        done = await submission.submit(
            runtime, principal, [spec], None, None, tags=door_tags(DOOR, principal)
        )
    except InvalidError as error:
        raise renamed(error) from error
    try:
        job = await finished(runtime, principal, done.jobs[0])
    except StillRunningError as waiting:
        raise JobStillRunningError(
            f"job {waiting.job.id!r} has not finished within the door's wait; follow it at"
            f" /v1/jobs/{waiting.job.id}",
            headers={"Location": f"/v1/jobs/{waiting.job.id}"},
        ) from waiting
    if job.status.phase == JobPhase.FAILED:
        raise JobFailedError(
            f"job {job.id!r} failed: {job.status.reason}: {job.status.message}",
            headers={"Location": f"/v1/jobs/{job.id}"},
        )
    images = await output_images(runtime, job) if job.status.phase == JobPhase.SUCCEEDED else []
    infotexts = [await asyncio.to_thread(infotext, data) for data in images]
    ran = spec
    if spec.style is not None:
        [ran] = await styled_specs(runtime, principal.tenant.namespace, [spec], "")
    info = info_of(job, ran, request, infotexts)
    encoded = [base64_text(data) for data in images] if request.send_images else []
    return ImageAnswer(images=encoded, parameters=echoed(request), info=json.dumps(info))


def base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Progress and interrupt


async def progress(runtime: Runtime, principal: Principal) -> ProgressAnswer:
    """The caller's newest unfinished job through this door: its steps, and the latest
    live preview seen within PREVIEW_WAIT_SECONDS (else its status's progress)."""
    jobs = await callers_jobs(runtime, principal, DOOR)
    if not jobs:
        return ProgressAnswer(progress=0, eta_relative=0, state=ProgressState(), current_image=None)
    job = jobs[0]
    step, total = (
        (job.status.progress.step, job.status.progress.total_steps)
        if job.status.progress
        else (0, 0)
    )
    eta, preview = 0.0, None
    if job.status.phase == JobPhase.RUNNING:
        live = await live_preview(runtime, job.uid)
        if live is not None:
            step, total, eta, preview = live
    state = ProgressState(
        job=job.id,
        job_count=len(jobs),
        job_timestamp=job_timestamp(job),
        sampling_step=step,
        sampling_steps=total,
    )
    fraction = min(step / total, 1.0) if total else 0.0
    return ProgressAnswer(progress=fraction, eta_relative=eta, state=state, current_image=preview)


async def live_preview(runtime: Runtime, uid: str) -> tuple[int, int, float, str | None] | None:
    """(step, total steps, eta, preview) of the latest progress report heard within
    PREVIEW_WAIT_SECONDS, ending early at the first preview; None when none came or
    RabbitMQ is unavailable (the status's progress answers then)."""
    heard: events.Events = asyncio.Queue()
    channel: AbstractChannel | None = None
    latest = None
    try:
        async with asyncio.timeout(PREVIEW_WAIT_SECONDS):
            await runtime.amqp.ready()
            channel = await runtime.amqp.channel()
            await events.subscribe(runtime, channel, uid, heard)
            while True:
                event = await heard.get()
                if event is None:
                    break
                data = event.data
                preview = data.get("preview")
                latest = (
                    data["step"],
                    data["totalSteps"],
                    data.get("etaSeconds") or 0.0,
                    preview.split(",", 1)[1] if preview else None,
                )
                if preview:
                    break
    except TimeoutError:
        pass
    except (AMQPError, RuntimeError) as error:
        logger.info("no live progress of %s: %r", uid, error)
    finally:
        if channel is not None:
            await events.close_channel(runtime, channel)
    return latest


async def interrupt(runtime: Runtime, principal: Principal) -> int:
    """Cancels the caller's unfinished jobs through this door; their waiting requests
    answer with no images and info.interrupted. Returns how many."""
    jobs = await callers_jobs(runtime, principal, DOOR)
    for job in jobs:
        await runtime.kube.cancel_job(job.namespace, job.id)
    return len(jobs)


def samplers() -> list[SamplerItem]:
    return [
        SamplerItem(name=label, aliases=[sampler.value])
        for sampler, label in SAMPLER_LABELS.items()
    ]


def schedulers() -> list[SchedulerItem]:
    return [
        SchedulerItem(name="automatic", label="Automatic"),
        SchedulerItem(name="karras", label="Karras", default_rho=7.0),
    ]
