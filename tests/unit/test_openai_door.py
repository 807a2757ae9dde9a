"""The OpenAI door's pure parts: its parameters as a job's spec (and what it refuses,
naming the parameter), OpenAI's mask convention in diffleet's, and its errors as the
OpenAI SDK reads them (each raises the SDK's own exception, retried or not as it should)."""

import io
import json
from typing import Any

import httpx2
import openai
import pytest
from PIL import Image, ImageDraw
from starlette.datastructures import UploadFile
from starlette.requests import Request

from diffleet_api.doors.openai import errors, masks, translation
from diffleet_api.doors.openai.schemas import (
    OpenAIEditRequest,
    OpenAIGenerationRequest,
    OpenAIVariationRequest,
)
from diffleet_api.errors import ApiError, Failure, FieldError
from diffleet_api.settings import ApiSettings

SETTINGS = ApiSettings(door_default_model="house-model")


def generation(**fields: Any) -> OpenAIGenerationRequest:
    return OpenAIGenerationRequest.model_validate({"prompt": "a red circle"} | fields)


def refusal(error: ApiError) -> tuple[str, str]:
    assert error.errors, error.detail
    return error.errors[0].field, error.errors[0].rule


def wire(request: OpenAIGenerationRequest) -> dict[str, Any]:
    spec = translation.generation_spec(request, SETTINGS)
    return spec.model_dump(mode="json", by_alias=True, exclude_unset=True)


def test_a_generation_sets_only_the_fields_the_request_gives() -> None:
    assert wire(generation()) == {"model": "house-model", "prompt": "a red circle"}
    assert wire(
        generation(
            model="micro-shapes",
            n=3,
            size="64x96",
            quality="hd",
            style="vivid",
            output_format="webp",
            output_compression=0,
            seed=7,
        )
    ) == {
        "model": "micro-shapes",
        "prompt": "a red circle",
        "width": 64,
        "height": 96,
        "batchSize": 3,
        "seed": 7,
        "steps": 40,
        "style": "cinematic",
        "output": {"format": "webp", "quality": 1},
    }


@pytest.mark.parametrize("model", ["dall-e-3", "gpt-image-1", None])
def test_openais_models_and_none_run_the_default(model: str | None) -> None:
    assert wire(generation(model=model))["model"] == "house-model"


def test_without_a_default_model_the_request_must_name_one() -> None:
    with pytest.raises(ApiError) as raised:
        translation.generation_spec(generation(), ApiSettings(door_default_model=""))
    assert refusal(raised.value) == ("model", "required")


def test_a_style_that_is_not_openais_is_a_style_preset() -> None:
    assert wire(generation(style="watercolour"))["style"] == "watercolour"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": True}, "stream"),
        ({"partial_images": 2}, "partial_images"),
        ({"background": "transparent"}, "background"),
        ({"output_format": "gif"}, "output_format"),
        ({"output_format": "svg"}, "output_format"),
        ({"svg": {"model": "x"}}, "svg"),
        ({"frame_count": 4}, "frame_count"),
        ({"frame_duration_ms": 100}, "frame_duration_ms"),
        ({"complexity": "low"}, "complexity"),
    ],
)
def test_what_the_platform_cannot_do_is_refused_by_name(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as raised:
        translation.generation_spec(generation(**fields), SETTINGS)
    assert refusal(raised.value) == (param, errors.UNSUPPORTED)


def test_the_harmless_values_of_those_parameters_are_accepted() -> None:
    fields = {"stream": False, "partial_images": 0, "background": "opaque", "moderation": "low"}
    assert wire(generation(**fields)) == {"model": "house-model", "prompt": "a red circle"}


@pytest.mark.parametrize("size", ["1001x1000", "32x64", "4096x4096", "big", "1024"])
def test_a_size_must_be_multiples_of_8_within_the_crds_limits(size: str) -> None:
    with pytest.raises(ApiError) as raised:
        translation.parse_size(size)
    assert refusal(raised.value) == ("size", "pattern")


def test_sizes() -> None:
    assert translation.parse_size("auto") is None
    assert translation.parse_size("1792x1024") == (1792, 1024)
    assert translation.fitted_size(100, 70) == (96, 64)
    assert translation.fitted_size(4000, 1000) == (2048, 512)
    assert translation.fitted_size(20, 20) == (64, 64)


def test_an_unknown_quality_is_refused() -> None:
    with pytest.raises(ApiError) as raised:
        translation.generation_spec(generation(quality="xhigh"), SETTINGS)
    assert refusal(raised.value) == ("quality", "enum")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def square_hole(mode: str = "RGBA") -> Image.Image:
    """A 64x64 image, opaque but for a fully transparent square (16..47)."""
    image = Image.new(mode, (64, 64), (200, 40, 40, 255))
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=(0, 0, 0, 0))
    return image


def test_a_masks_transparent_pixels_are_diffleets_white() -> None:
    image = png_bytes(Image.new("RGB", (64, 64), "red"))
    edit = masks.edit_images(image, png_bytes(square_hole()), 2048 * 2048)
    assert edit.size == (64, 64)
    assert edit.mask is not None
    mask = decoded(edit.mask)
    assert mask.mode == "L"
    assert (mask.getpixel((20, 20)), mask.getpixel((5, 5)), mask.getpixel((50, 50))) == (255, 0, 0)


def test_without_a_mask_the_images_own_transparency_is_edited() -> None:
    edit = masks.edit_images(png_bytes(square_hole()), None, 2048 * 2048)
    assert edit.mask is not None
    assert decoded(edit.mask).getpixel((30, 30)) == 255


def test_an_opaque_image_without_a_mask_is_an_img2img_edit() -> None:
    opaque = png_bytes(Image.new("RGBA", (64, 64), (10, 200, 10, 255)))
    assert masks.edit_images(opaque, None, 2048 * 2048).mask is None
    fields = translation.output_fields(
        OpenAIEditRequest.model_validate({"prompt": "a square"}), SETTINGS
    )
    spec = translation.edit_spec(fields, "s3://uploads/t/a.png", None, (100, 64))
    assert (spec.mode, spec.width, spec.height, spec.mask_image) == ("img2img", 96, 64, None)


def test_a_variation_is_an_img2img_of_the_configured_prompt_and_strength() -> None:
    request = OpenAIVariationRequest.model_validate({"image": UploadFile(io.BytesIO()), "n": "2"})
    spec = translation.edit_spec(
        translation.variation_fields(request, SETTINGS), "s3://uploads/t/a.png", None, (64, 64)
    )
    assert (spec.mode, spec.prompt, spec.strength, spec.batch_size) == (
        "img2img",
        SETTINGS.openai_variation_prompt,
        SETTINGS.openai_variation_strength,
        2,
    )


def test_a_masked_edit_is_an_inpaint_from_noise() -> None:
    request = OpenAIEditRequest.model_validate({"prompt": "a blue circle", "size": "128x128"})
    fields = translation.output_fields(request, SETTINGS)
    spec = translation.edit_spec(fields, "s3://uploads/t/a.png", "s3://uploads/t/m.png", (64, 64))
    assert (spec.mode, spec.strength, spec.width, spec.mask_image) == (
        "inpaint",
        1.0,
        128,
        "s3://uploads/t/m.png",
    )


@pytest.mark.parametrize(
    ("mask", "rule"),
    [
        (Image.new("RGBA", (32, 64)), "size"),
        (Image.new("L", (64, 64), 255), "alpha"),
    ],
)
def test_a_mask_needs_the_images_size_and_an_alpha_channel(mask: Image.Image, rule: str) -> None:
    with pytest.raises(ApiError) as raised:
        masks.edit_images(png_bytes(Image.new("RGB", (64, 64))), png_bytes(mask), 2048 * 2048)
    assert refusal(raised.value) == ("mask", rule)


def test_an_edit_takes_one_image() -> None:
    with pytest.raises(ApiError) as raised:
        masks.the_image(OpenAIEditRequest.model_validate({"prompt": "x"}))
    assert refusal(raised.value) == ("image", "required")


def test_a_form_field_sent_empty_is_absent() -> None:
    request = OpenAIEditRequest.model_validate({"prompt": "x", "n": "", "size": ""})
    assert (request.n, request.size) == (None, None)


def answered(failure: Failure) -> httpx2.Response:
    scope = {"type": "http", "path": "/v1/images/generations", "headers": []}
    rendered = errors.render(Request(scope), failure)
    return httpx2.Response(
        rendered.status_code, headers=dict(rendered.headers), content=bytes(rendered.body)
    )


def sdk_error(failure: Failure) -> tuple[openai.APIStatusError, int]:
    """What the SDK raises for the failure, and how many requests it made (two retries
    allowed)."""
    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        return answered(failure)

    client = openai.OpenAI(
        base_url="http://diffleet.test/v1",
        api_key="dfl_test",
        max_retries=2,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    client._calculate_retry_timeout = lambda *_: 0  # type: ignore[method-assign]
    with pytest.raises(openai.APIStatusError) as raised:
        client.images.generate(prompt="a red circle")
    return raised.value, len(calls)


def invalid_field(field: str, rule: str) -> Failure:
    error = FieldError(field=field, rule=rule, message="wrong")
    return Failure(422, "validation", "Invalid request", "1 invalid field(s)", [error])


@pytest.mark.parametrize(
    ("failure", "exception", "error", "attempts"),
    [
        (
            invalid_field("batchSize", "maximum"),
            openai.BadRequestError,
            {"type": "invalid_request_error", "param": "n", "code": "invalid_value"},
            1,
        ),
        (
            invalid_field("colour", "additionalProperties"),
            openai.BadRequestError,
            {
                "param": "colour",
                "code": "unknown_parameter",
                "message": "Unknown parameter: 'colour'.",
            },
            1,
        ),
        (
            Failure(400, "bad-request", "Bad request", "the body is not JSON"),
            openai.BadRequestError,
            {"type": "invalid_request_error", "param": None},
            1,
        ),
        (
            Failure(401, "unauthenticated", "Missing", "invalid API key"),
            openai.AuthenticationError,
            {"code": "invalid_api_key"},
            1,
        ),
        (
            Failure(403, "forbidden", "Not allowed", "viewer"),
            openai.PermissionDeniedError,
            {"code": "permission_denied"},
            1,
        ),
        (
            Failure(402, "insufficient-credits", "Insufficient credits", "0 left"),
            openai.RateLimitError,
            {"type": "insufficient_quota", "code": "insufficient_quota"},
            1,
        ),
        (
            Failure(429, "rate-limited", "Too many", "slow down", headers={"Retry-After": "0"}),
            openai.RateLimitError,
            {"type": "requests", "code": "rate_limit_exceeded"},
            3,
        ),
        (
            Failure(503, "unavailable", "Unavailable", "retry"),
            openai.InternalServerError,
            {"type": "server_error"},
            3,
        ),
        (
            Failure(503, "unavailable", "Unavailable", "S3", headers={errors.JOB_HEADER: "gj-3"}),
            openai.InternalServerError,
            {"type": "server_error", "job_id": "gj-3"},
            1,
        ),
        (
            Failure(500, "internal", "Internal error", "logged"),
            openai.InternalServerError,
            {"type": "server_error", "code": None},
            1,
        ),
        (
            Failure(
                504,
                "job-still-running",
                "Still running",
                "wait",
                headers={errors.JOB_HEADER: "gj-1"},
            ),
            openai.InternalServerError,
            {"code": "job_still_running", "job_id": "gj-1"},
            1,
        ),
        (
            Failure(
                500, "job-failed", "Failed", "job gj-2 Failed", headers={errors.JOB_HEADER: "gj-2"}
            ),
            openai.InternalServerError,
            {"code": "job_failed", "job_id": "gj-2"},
            1,
        ),
    ],
)
def test_each_failure_is_the_sdks_own_exception(
    failure: Failure,
    exception: type[openai.APIStatusError],
    error: dict[str, Any],
    attempts: int,
) -> None:
    raised, calls = sdk_error(failure)
    assert type(raised) is exception
    assert isinstance(raised.body, dict)
    assert {key: raised.body.get(key) for key in error} == error
    assert calls == attempts
    assert json.loads(answered(failure).content)["error"].keys() >= {
        "message",
        "type",
        "param",
        "code",
    }


def test_an_image_over_the_tiers_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(ApiError) as raised:
        masks.edit_images(png_bytes(Image.new("RGB", (128, 128))), None, 64 * 64)
    assert refusal(raised.value) == ("image", "maxPixels")


def test_a_spec_field_is_refused_as_the_openai_parameter_it_came_from() -> None:
    with pytest.raises(ApiError) as raised:
        translation.generation_spec(generation(style="Not A Preset"), SETTINGS)
    failure = Failure(422, "validation", "Invalid", raised.value.detail, raised.value.errors)
    status, error = errors.error_object(failure)
    assert (status, error.param, error.code) == (400, "style", "invalid_value")
    assert errors.param_of("output.quality") == "output_compression"
