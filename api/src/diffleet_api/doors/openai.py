"""The OpenAI Images API door: OpenAI's request fields, their translation into a
GenerationJobSpec, the answer in OpenAI's shape, and its error dialect.

A request is one job: `n` is the job's batchSize. What the platform cannot do (streaming,
a transparent background, gif or svg output, several images in an edit, ...) is refused
with a 400 naming the parameter, never ignored. `seed` is diffleet's own addition (the
SDK sends it with `extra_body`)."""

import base64
import io
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffleet_api.errors import ApiError, Failure, FieldError, invalid, invalid_from
from diffleet_api.images import ImageRefusedError, RefusalKind, sanitize
from diffleet_api.schemas import JobPublic
from diffleet_api.settings import ApiSettings
from diffleet_core.resources.generation_job import (
    MAX_CANVAS_SIDE,
    MAX_PROMPT_LENGTH,
    MAX_SEED,
    GenerationJobSpec,
    Mode,
)

DOOR = "openai"
PREFIX = "/v1/images"
JOB_HEADER = "Diffleet-Job"
"""Names the job of an answer (and of a 504): follow it at /v1/jobs/{id}."""
OPENAI_MODELS = ("dall-e-", "gpt-image-")
SIZE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")
MIN_SIDE = 64
SIDE_STEP = 8
# An edit repaints its transparent area from noise, as OpenAI's edits do: the masked
# pixels of the image are not a starting point.
EDIT_STRENGTH = 1.0
UNSUPPORTED = "unsupported"
# The answer's `quality`, as the SDK's ImagesResponse names it.
ANSWERED_QUALITIES = ("low", "medium", "high")

EndUser = Annotated[str | None, Field(default=None, max_length=256)]


class ImageRequest(BaseModel):
    """The fields every Images API request has; unknown fields are refused, as OpenAI
    refuses them."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        max_length=253,
        description="A ModelCache (checkpoint); OpenAI's models (dall-e-*, gpt-image-*) and"
        " none run the platform's default",
    )
    n: int | None = Field(default=None, ge=1, le=8, description="Images: the job's batchSize")
    size: str | None = Field(
        default=None,
        max_length=16,
        description='"WxH" (multiples of 8 from 64 to 2048), or "auto"',
    )
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="url (presigned, the default) or b64_json"
    )
    user: EndUser = Field(description="The end user (annotated on the job)")
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED, description="diffleet's own: the job's seed"
    )

    @property
    def end_user(self) -> str | None:
        return self.user


class OutputRequest(ImageRequest):
    """The fields of the requests that take a prompt (generations and edits)."""

    prompt: str = Field(max_length=MAX_PROMPT_LENGTH)
    quality: str | None = Field(
        default=None, max_length=16, description="Denoising steps, by openai_quality_steps"
    )
    output_format: Literal["png", "jpeg", "webp", "gif", "svg"] | None = Field(
        default=None, description="png, jpeg or webp"
    )
    output_compression: int | None = Field(
        default=None, ge=0, le=100, description="The jpeg or webp quality (0 is 1)"
    )
    background: Literal["transparent", "opaque", "auto"] | None = None
    safety_identifier: EndUser = Field(description="The end user; wins over `user`")
    stream: bool | None = Field(default=None, description="Not supported: false only")
    partial_images: int | None = Field(default=None, description="Not supported: 0 only")
    complexity: str | None = Field(default=None, description="Not supported")
    frame_count: int | None = Field(default=None, description="Not supported")
    frame_duration_ms: int | None = Field(default=None, description="Not supported")
    svg: dict[str, Any] | None = Field(default=None, description="Not supported")

    @property
    def end_user(self) -> str | None:
        """safety_identifier is OpenAI's newer name of `user`."""
        return self.safety_identifier or self.user


class GenerationRequest(OutputRequest):
    """POST /v1/images/generations (JSON)."""

    style: str | None = Field(
        default=None,
        max_length=253,
        description="vivid or natural (by openai_style_presets), else a StylePreset's name",
    )
    moderation: Literal["low", "auto"] | None = Field(
        default=None, description="Either: the tenant's content policy applies"
    )


class FormRequest(BaseModel):
    """A multipart form: a field the SDK sends as None arrives as "", meaning absent."""

    @model_validator(mode="before")
    @classmethod
    def empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value != ""}
        return data


class EditRequest(FormRequest, OutputRequest):
    """POST /v1/images/edits (multipart)."""

    image: UploadFile | None = Field(default=None, description="The image (png, jpeg, webp)")
    images: list[UploadFile] | None = Field(
        default=None, alias="image[]", description="The image, as a list of one"
    )
    mask: UploadFile | None = Field(
        default=None, description="Same size as image; its transparent pixels are edited"
    )
    markup: UploadFile | None = Field(default=None, description="Not supported")
    input_fidelity: str | None = Field(default=None, description="Not supported")

    def the_image(self) -> UploadFile:
        """The one image of the edit; refused when there are none or several."""
        given = ([self.image] if self.image else []) + list(self.images or [])
        if not given:
            raise refused("image", "an edit needs an image", "required")
        if len(given) > 1:
            raise refused("image", f"an edit takes one image; {len(given)} were sent")
        return given[0]


class VariationRequest(FormRequest, ImageRequest):
    """POST /v1/images/variations (multipart)."""

    image: UploadFile = Field(description="The image (png, jpeg, webp)")


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix time the job finished")
    data: list[ImageData]
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    job_id: str | None = Field(default=None, description="The job of a 504 (still running)")


class ErrorBody(BaseModel):
    error: ErrorObject


class JobStillRunningError(ApiError):
    status, kind, title = 504, "job-still-running", "The job is still running"


class JobFailedError(ApiError):
    status, kind, title = 500, "job-failed", "The job did not succeed"


def job_header(job: JobPublic) -> dict[str, str]:
    return {JOB_HEADER: job.id}


def still_running(job: JobPublic, wait_seconds: float) -> JobStillRunningError:
    return JobStillRunningError(
        f"job {job.id} has not finished within {wait_seconds:g} s; follow it at"
        f" /v1/jobs/{job.id} (its outputs at /v1/jobs/{job.id}/outputs)",
        headers=job_header(job),
    )


def not_succeeded(job: JobPublic) -> JobFailedError:
    phase = job.status.phase.value if job.status.phase else "Pending"
    why = ": ".join(part for part in (job.status.reason, job.status.message) if part)
    return JobFailedError(
        f"job {job.id} {phase}" + (f" ({why})" if why else ""), headers=job_header(job)
    )


def refused(param: str, message: str, rule: str = UNSUPPORTED) -> ApiError:
    return invalid([FieldError(field=param, rule=rule, message=message)])


def unsupported(request: OutputRequest) -> list[FieldError]:
    """An error for each parameter asking for what the platform cannot do."""
    asked = {
        "stream": (request.stream, "streaming is not supported; send stream false"),
        "partial_images": (request.partial_images, "partial images need streaming"),
        "background": (
            request.background == "transparent",
            "a transparent background is not supported; opaque or auto",
        ),
        "output_format": (
            request.output_format in ("gif", "svg"),
            f"{request.output_format} is not supported; png, jpeg or webp",
        ),
        "complexity": (request.complexity is not None, "svg complexity is not supported"),
        "frame_count": (request.frame_count is not None, "animations are not supported"),
        "frame_duration_ms": (
            request.frame_duration_ms is not None,
            "animations are not supported",
        ),
        "svg": (request.svg is not None, "svg output is not supported"),
    }
    if isinstance(request, EditRequest):
        asked["markup"] = (request.markup is not None, "markup images are not supported")
        asked["input_fidelity"] = (
            request.input_fidelity is not None,
            "input_fidelity is not supported",
        )
    return [
        FieldError(field=param, rule=UNSUPPORTED, message=message)
        for param, (value, message) in asked.items()
        if value
    ]


def parse_size(size: str | None) -> tuple[int, int] | None:
    """The width and height of "WxH"; None for "auto" or none given."""
    if size is None or size == "auto":
        return None
    match = SIZE.match(size)
    valid = match is not None and all(
        MIN_SIDE <= int(side) <= MAX_CANVAS_SIDE and int(side) % SIDE_STEP == 0
        for side in match.groups()
    )
    if match is None or not valid:
        raise refused(
            "size",
            f"size {size!r} must be WxH with each side a multiple of {SIDE_STEP} from"
            f" {MIN_SIDE} to {MAX_CANVAS_SIDE} (e.g. 1024x1024), or auto",
            rule="pattern",
        )
    return int(match.group(1)), int(match.group(2))


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """A job's size for an image of this size: within the largest side, each side a
    multiple of 8 (rounded down), at least 64."""
    scale = min(1.0, MAX_CANVAS_SIDE / max(width, height))

    def side(pixels: int) -> int:
        return max(MIN_SIDE, int(pixels * scale) // SIDE_STEP * SIDE_STEP)

    return side(width), side(height)


def checkpoint(request: ImageRequest, settings: ApiSettings) -> str:
    """The ModelCache to run: the one named, else (none, or one of OpenAI's) the default."""
    named = request.model
    if named and not named.startswith(OPENAI_MODELS):
        return named
    if not settings.door_default_model:
        raise refused(
            "model",
            "no default model is configured (DIFFLEET_API_DOOR_DEFAULT_MODEL): name a"
            " ModelCache (GET /v1/models)",
            rule="required",
        )
    return settings.door_default_model


def common_fields(request: ImageRequest, settings: ApiSettings) -> dict[str, Any]:
    """The spec's fields of what every request has; a field the client left out stays
    unset, so that a style preset and the platform's defaults apply as for POST /v1/jobs."""
    fields: dict[str, Any] = {"model": checkpoint(request, settings)}
    size = parse_size(request.size)
    if size is not None:
        fields["width"], fields["height"] = size
    if request.n is not None:
        fields["batchSize"] = request.n
    if request.seed is not None:
        fields["seed"] = request.seed
    return fields


def output_fields(request: OutputRequest, settings: ApiSettings) -> dict[str, Any]:
    """The spec's fields of a prompted request (refusing what it cannot do)."""
    errors = unsupported(request)
    if errors:
        raise invalid(errors)
    fields = common_fields(request, settings) | {"prompt": request.prompt}
    if request.quality is not None:
        steps = settings.openai_quality_steps.get(request.quality)
        if steps is None:
            known = ", ".join(sorted(settings.openai_quality_steps))
            raise refused("quality", f"quality must be one of {known}", rule="enum")
        fields["steps"] = steps
    output: dict[str, Any] = {}
    if request.output_format is not None:
        output["format"] = request.output_format
    if request.output_compression is not None:
        output["quality"] = max(1, request.output_compression)
    if output:
        fields["output"] = output
    return fields


def built(fields: dict[str, Any]) -> GenerationJobSpec:
    try:
        return GenerationJobSpec.model_validate(fields)
    except ValidationError as error:
        raise invalid_from(error) from None


def generation_spec(request: GenerationRequest, settings: ApiSettings) -> GenerationJobSpec:
    fields = output_fields(request, settings)
    if request.style is not None:
        fields["style"] = settings.openai_style_presets.get(request.style, request.style)
    return built(fields)


def edit_spec(
    fields: dict[str, Any], image: str, mask: str | None, image_size: tuple[int, int]
) -> GenerationJobSpec:
    """The request's `fields` on the stored image: an inpaint job when there is a mask
    (`mask`: white = repaint), else img2img; of the image's size (fitted) unless the
    request's `size` says otherwise."""
    fields = fields | {"initImage": image}
    if mask is not None:
        fields |= {"mode": Mode.INPAINT, "maskImage": mask, "strength": EDIT_STRENGTH}
    else:
        fields["mode"] = Mode.IMG2IMG
    return built(sized(fields, image_size))


def variation_fields(request: VariationRequest, settings: ApiSettings) -> dict[str, Any]:
    """An img2img job of the image with the configured prompt and strength."""
    return common_fields(request, settings) | {
        "prompt": settings.openai_variation_prompt,
        "strength": settings.openai_variation_strength,
    }


def sized(fields: dict[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
    if "width" in fields:
        return fields
    width, height = fitted_size(*image_size)
    return fields | {"width": width, "height": height}


class EditImages(BaseModel):
    """An edit's image and its mask in diffleet's terms (PNG bytes, white = repaint;
    None: no transparency, an img2img edit), and the image's size."""

    image: bytes
    mask: bytes | None
    size: tuple[int, int]


def opened(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """The image decoded once cleaned as an upload is (`images.sanitize`); a refusal
    names `param`."""
    try:
        clean = sanitize(data, max_pixels)
    except ImageRefusedError as error:
        rule = "maxPixels" if error.kind == RefusalKind.TOO_LARGE else "image"
        raise refused(param, error.message, rule) from error
    with Image.open(io.BytesIO(clean.data)) as image:
        image.load()
        return image.copy()


def transparent_area(image: Image.Image) -> Image.Image | None:
    """The image's fully transparent pixels as a mask (white there, black elsewhere);
    None when it has no alpha."""
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" not in image.getbands():
        return None
    alpha = image.getchannel("A")
    return alpha.point(lambda value: 255 if value == 0 else 0)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_images(image_data: bytes, mask_data: bytes | None, max_pixels: int) -> EditImages:
    """OpenAI's convention in diffleet's: the mask's fully transparent pixels are edited
    (without a mask, the image's own); a mask must have the image's size and an alpha
    channel. An image with no transparent pixel and no mask is an img2img edit."""
    image = opened(image_data, "image", max_pixels)
    if mask_data is None:
        area = transparent_area(image)
        has_area = area is not None and area.getextrema()[1] == 255
        return EditImages(
            image=image_data, mask=png(area) if has_area and area else None, size=image.size
        )
    mask = opened(mask_data, "mask", max_pixels)
    if mask.size != image.size:
        raise refused(
            "mask",
            f"the mask is {mask.width}x{mask.height}; it must have the image's size"
            f" ({image.width}x{image.height})",
            "size",
        )
    area = transparent_area(mask)
    if area is None:
        raise refused("mask", "the mask must have an alpha channel (transparent = edited)", "alpha")
    return EditImages(image=image_data, mask=png(area), size=image.size)


async def read_upload(upload: UploadFile, param: str, limit: int) -> bytes:
    """The file's bytes, refused beyond `limit` without reading further."""
    if upload.size is not None and upload.size > limit:
        raise refused(param, f"{param} is {upload.size} bytes; at most {limit}", "maxBytes")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise refused(param, f"{param} is over {limit} bytes", "maxBytes")
    return data


def answer(
    job: JobPublic,
    images: list[bytes] | None,
    urls: list[str] | None,
    revised_prompt: str,
    quality: str | None,
) -> ImagesResponse:
    """The finished job in OpenAI's shape: b64_json when `images`, else url."""
    spec = job.spec
    assert spec is not None, "a job the door created has a spec"
    created = job.status.completed_at or job.created_at
    entries = (
        [
            ImageData(b64_json=base64.b64encode(data).decode(), revised_prompt=revised_prompt)
            for data in images
        ]
        if images is not None
        else [ImageData(url=url, revised_prompt=revised_prompt) for url in urls or []]
    )
    outputs = job.status.outputs or []
    size = f"{outputs[0].width}x{outputs[0].height}" if outputs else None
    return ImagesResponse(
        created=int(created.timestamp()),
        data=entries,
        size=size,
        quality=quality if quality in ANSWERED_QUALITIES else None,
        output_format=spec.output.format.value,
    )


# Spec fields (as POST /v1/jobs names them) by the OpenAI parameter they came from.
PARAMS = {
    "batchSize": "n",
    "width": "size",
    "height": "size",
    "steps": "quality",
    "output.format": "output_format",
    "output.quality": "output_compression",
    "initImage": "image",
    "maskImage": "mask",
    "image[]": "image",
}
CODES = {
    "additionalProperties": "unknown_parameter",
    UNSUPPORTED: "unsupported_parameter",
    "required": "missing_required_parameter",
}
MODEL_NOT_FOUND = "model_not_found"
# Status, type and code of each failure that is not a refused parameter.
KINDS: dict[int, tuple[int, str, str | None]] = {
    401: (401, "invalid_request_error", "invalid_api_key"),
    402: (429, "insufficient_quota", "insufficient_quota"),
    403: (403, "invalid_request_error", "permission_denied"),
    404: (404, "invalid_request_error", "not_found"),
    413: (400, "invalid_request_error", "too_large"),
    415: (400, "invalid_request_error", "unsupported_media_type"),
    429: (429, "requests", "rate_limit_exceeded"),
    500: (500, "server_error", None),
    503: (503, "server_error", "unavailable"),
    504: (504, "server_error", "job_still_running"),
}
# A retry cannot help (nor can one of a failure that names its job: it would make a
# second job).
NO_RETRY = {"insufficient-credits", "internal"}


def param_of(field: str) -> str:
    """The OpenAI parameter of a refused field (a spec's field mapped back)."""
    return PARAMS.get(field, field)


def code_of(param: str, rule: str) -> str:
    """OpenAI's code of a refused parameter (a model that does not exist has its own)."""
    if (param, rule) == ("model", "exists"):
        return MODEL_NOT_FOUND
    return CODES.get(rule, "invalid_value")


def error_object(failure: Failure) -> tuple[int, ErrorObject]:
    """The failure's status and error object as OpenAI answers them."""
    if failure.status in (400, 422) and failure.errors:
        first = failure.errors[0]
        param = param_of(first.field)
        messages = [
            f"Unknown parameter: {param_of(error.field)!r}."
            if error.rule == "additionalProperties"
            else f"Invalid {param_of(error.field)!r}: {error.message}"
            for error in failure.errors
        ]
        return 400, ErrorObject(
            message=" ".join(messages),
            type="invalid_request_error",
            param=param,
            code=code_of(param, first.rule),
        )
    status, kind, known_code = KINDS.get(
        failure.status,
        (
            failure.status,
            "server_error" if failure.status >= 500 else "invalid_request_error",
            None,
        ),
    )
    code = "job_failed" if failure.kind == "job-failed" else known_code
    job_id = (failure.headers or {}).get(JOB_HEADER)
    return status, ErrorObject(message=failure.detail, type=kind, code=code, job_id=job_id)


def render(request: Request, failure: Failure) -> JSONResponse:
    """The errors.install dialect of PREFIX: `{"error": {message, type, param, code}}`
    with the status the OpenAI SDK raises its matching exception for."""
    status, error = error_object(failure)
    headers = dict(failure.headers or {})
    if failure.kind in NO_RETRY or JOB_HEADER in headers:
        headers["x-should-retry"] = "false"
    body = ErrorBody(error=error).model_dump(exclude_none=True)
    body["error"].setdefault("param", None)
    body["error"].setdefault("code", None)
    return JSONResponse(body, status_code=status, headers=headers)
