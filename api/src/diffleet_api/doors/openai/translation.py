"""OpenAI's parameters as a GenerationJobSpec: the size, the checkpoint, the steps of a
quality, an edit's or a variation's image. What the platform cannot do (streaming, a
transparent background, gif or svg output, ...) is refused naming the parameter, never
ignored."""

import re
from typing import Any

from pydantic import ValidationError

from diffleet_api.doors.openai.errors import UNSUPPORTED, refused
from diffleet_api.doors.openai.schemas import (
    OpenAIEditRequest,
    OpenAIGenerationRequest,
    OpenAIImageRequest,
    OpenAIOutputRequest,
    OpenAIVariationRequest,
)
from diffleet_api.errors import FieldError, invalid, invalid_from
from diffleet_api.settings import ApiSettings
from diffleet_core.resources.generation_job import MAX_CANVAS_SIDE, GenerationJobSpec, Mode

OPENAI_MODELS = ("dall-e-", "gpt-image-")
SIZE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")
MIN_SIDE = 64
SIDE_STEP = 8
# An edit repaints its transparent area from noise, as OpenAI's edits do: the masked
# pixels of the image are not a starting point.
EDIT_STRENGTH = 1.0


def unsupported(request: OpenAIOutputRequest) -> list[FieldError]:
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
    if isinstance(request, OpenAIEditRequest):
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


def checkpoint(request: OpenAIImageRequest, settings: ApiSettings) -> str:
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


def common_fields(request: OpenAIImageRequest, settings: ApiSettings) -> dict[str, Any]:
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


def output_fields(request: OpenAIOutputRequest, settings: ApiSettings) -> dict[str, Any]:
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


def generation_spec(request: OpenAIGenerationRequest, settings: ApiSettings) -> GenerationJobSpec:
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


def variation_fields(request: OpenAIVariationRequest, settings: ApiSettings) -> dict[str, Any]:
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
