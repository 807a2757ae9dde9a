"""The Automatic1111 door's pure steps: what webuiapi sends by default is accepted, what
asks for something unsupported is refused naming the field, A1111's sampler names map
to diffleet's, the info A1111 clients read, the error shape, and the inpaint images
prepared as A1111 prepares them (mask threshold, invert, blur; the masked area's fill)."""

import base64
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import webuiapi  # type: ignore[import-untyped]
from PIL import Image, ImageDraw

from diffleet_api.doors.a1111.answers import info_of
from diffleet_api.doors.a1111.checkpoints import requested_checkpoint
from diffleet_api.doors.a1111.errors import a1111_field, renamed, render
from diffleet_api.doors.a1111.images import InpaintingFill, decoded, inpaint_inputs
from diffleet_api.doors.a1111.refusals import refusals
from diffleet_api.doors.a1111.sampling import sampler_of
from diffleet_api.doors.a1111.schemas import A1111Img2ImgRequest, A1111Txt2ImgRequest
from diffleet_api.doors.a1111.translation import img2img_spec, txt2img_spec
from diffleet_api.errors import Failure, FieldError, InvalidError
from diffleet_api.schemas import JobPublic
from diffleet_core.resources.generation_job import MAX_SEED, Mode, Sampler
from tests.support.pictures import opened, png_bytes

SETTINGS = "override_settings"


class Captured(webuiapi.WebUIApi):  # type: ignore[misc]
    """webuiapi's client that keeps the payload it would post instead of posting it."""

    def __init__(self) -> None:
        super().__init__(baseurl="http://127.0.0.1:9/sdapi/v1")  # nothing listens there
        self.payloads: list[dict[str, Any]] = []

    def post_and_get_api_result(self, url: str, json: dict[str, Any], use_async: bool) -> None:
        self.payloads.append(json)


def webuiapi_payload(call: str, **arguments: Any) -> dict[str, Any]:
    client = Captured()
    getattr(client, call)(**arguments)
    return client.payloads[0]


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def refused_fields(error: pytest.ExceptionInfo[InvalidError]) -> list[str]:
    return [item.field for item in error.value.errors or []]


def test_webuiapis_default_txt2img_payload_becomes_a_job_of_its_values() -> None:
    payload = webuiapi_payload("txt2img", prompt="a red circle", seed=5, width=64, height=64)
    spec = txt2img_spec(A1111Txt2ImgRequest.model_validate(payload), "micro-shapes")
    assert (spec.model, spec.mode, spec.prompt, spec.seed) == (
        "micro-shapes",
        Mode.TXT2IMG,
        "a red circle",
        5,
    )
    assert (spec.width, spec.height, spec.steps, spec.sampler) == (64, 64, 20, Sampler.EULER_A)
    assert spec.hires_fix is None


def test_webuiapis_default_img2img_payload_is_accepted() -> None:
    image = Image.new("RGB", (64, 64), "white")
    payload = webuiapi_payload("img2img", images=[image], mask_image=image, prompt="x")
    request = A1111Img2ImgRequest.model_validate(payload)
    assert refusals(request) == []
    spec = img2img_spec(request, "m", "s3://uploads/t/a.png", "s3://uploads/t/b.png")
    assert (spec.mode, spec.strength, spec.mask_image) == (
        Mode.INPAINT,
        0.75,
        "s3://uploads/t/b.png",
    )
    assert img2img_spec(request, "m", "s3://uploads/t/a.png", None).mode is Mode.IMG2IMG


def test_seed_minus_one_leaves_the_seed_to_the_operator() -> None:
    spec = txt2img_spec(A1111Txt2ImgRequest(prompt="x", seed=-1), "m")
    assert spec.seed is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"sampler_name": "Euler a"}, Sampler.EULER_A),
        ({"sampler_name": "DPM++ 2M Karras"}, Sampler.DPMPP_2M_KARRAS),
        ({"sampler_name": "DPM++ 2M", "scheduler": "Karras"}, Sampler.DPMPP_2M_KARRAS),
        ({"sampler_name": "DPM++ 2M", "scheduler": "automatic"}, Sampler.DPMPP_2M),
        ({"sampler_name": "unipc"}, Sampler.UNIPC),
        ({"sampler_index": "DDIM"}, Sampler.DDIM),
        ({}, Sampler.EULER),
    ],
)
def test_samplers_by_their_a1111_names(fields: dict[str, Any], expected: Sampler) -> None:
    assert sampler_of(A1111Txt2ImgRequest(prompt="x", **fields)) is expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sampler_name": "Restart"}, "sampler_name"),
        ({"sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler"),
        ({"sampler_name": "Euler", "scheduler": "Exponential"}, "scheduler"),
    ],
)
def test_an_unknown_sampler_is_refused_naming_its_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidError) as refused:
        sampler_of(A1111Txt2ImgRequest(prompt="x", **fields))
    assert refused_fields(refused) == [field]
    assert refused.value.status == 422


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"n_iter": 2}, "n_iter"),
        ({"tiling": True}, "tiling"),
        ({"restore_faces": True}, "restore_faces"),
        ({"subseed_strength": 0.5}, "subseed_strength"),
        ({"seed_resize_from_w": 512}, "seed_resize_from_w"),
        ({"s_churn": 0.3}, "s_churn"),
        ({"s_noise": 0.9}, "s_noise"),
        ({"script_name": "x/y/z plot"}, "script_name"),
        ({"alwayson_scripts": {"CN": {"args": [{"on": True}]}}}, "alwayson_scripts.CN"),
        ({"styles": ["a", "b"]}, "styles"),
        ({SETTINGS: {"CLIP_stop_at_last_layers": 2}}, f"{SETTINGS}.CLIP_stop_at_last_layers"),
        ({SETTINGS: {"eta_noise_seed_delta": 1}}, f"{SETTINGS}.eta_noise_seed_delta"),
        ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
        ({"enable_hr": True, "hr_resize_x": 1024}, "hr_resize_x"),
        ({"enable_hr": True, "hr_checkpoint_name": "other"}, "hr_checkpoint_name"),
        ({"enable_hr": True, "hr_prompt": "else"}, "hr_prompt"),
        ({"firstphase_width": 256}, "firstphase_width"),
        ({"batch_size": 9}, "batch_size"),
        ({"width": 100}, "width"),
        ({"cfg_scale": 31}, "cfg_scale"),
        ({"seed": MAX_SEED + 1}, "seed"),
    ],
)  # fmt: skip
def test_what_asks_for_the_unsupported_is_refused_naming_the_field(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidError) as refused:
        txt2img_spec(A1111Txt2ImgRequest(prompt="x", **fields), "m")
    assert refused_fields(refused) == [field]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"resize_mode": 1}, "resize_mode"),
        ({"init_images": ["a", "b"]}, "init_images"),
        ({"initial_noise_multiplier": 0.5}, "initial_noise_multiplier"),
        ({"denoising_strength": 1.5}, "denoising_strength"),
    ],
)
def test_img2img_refusals_name_the_field(fields: dict[str, Any], field: str) -> None:
    request = A1111Img2ImgRequest.model_validate({"init_images": ["a"], "prompt": "x"} | fields)
    with pytest.raises(InvalidError) as refused:
        img2img_spec(request, "m", "s3://uploads/t/a.png", None)
    assert refused_fields(refused) == [field]


def test_enable_hr_is_a_hires_fix_with_a1111s_second_pass_values() -> None:
    request = A1111Txt2ImgRequest(
        prompt="x", steps=12, enable_hr=True, hr_scale=1.5, denoising_strength=0.4
    )
    hires = txt2img_spec(request, "m").hires_fix
    assert hires is not None
    assert (hires.scale, hires.strength, hires.steps, hires.latent) == (1.5, 0.4, 12, True)
    pixel = request.model_copy(update={"hr_upscaler": "Lanczos", "hr_second_pass_steps": 5})
    hires = txt2img_spec(pixel, "m").hires_fix
    assert hires is not None
    assert (hires.steps, hires.latent) == (5, False)


def test_checkpoint_style_and_vae_come_from_the_request() -> None:
    request = A1111Txt2ImgRequest(
        prompt="x",
        styles=["cinematic"],
        override_settings={"sd_model_checkpoint": "micro-shapes [0123abcdef]", "sd_vae": "my-vae"},
    )
    assert requested_checkpoint(request) == "micro-shapes"
    spec = txt2img_spec(request, "micro-shapes")
    assert (spec.style, spec.vae) == ("cinematic", "my-vae")
    automatic = request.model_copy(update={"override_settings": {"sd_vae": "Automatic"}})
    assert requested_checkpoint(automatic) is None
    assert txt2img_spec(automatic, "m").vae is None


def test_submission_errors_are_named_as_a1111_names_the_fields() -> None:
    assert a1111_field("model") == "override_settings.sd_model_checkpoint"
    assert a1111_field("guidanceScale") == "cfg_scale"
    assert a1111_field("negative_prompt") == "negative_prompt"
    assert a1111_field("initImage") == "init_images"
    assert a1111_field("prompt") == "prompt"


def finished_job(**status: Any) -> JobPublic:
    return JobPublic.model_validate(
        {
            "id": "gj-abc",
            "uid": "u-1",
            "namespace": "t",
            "spec": {"model": "m", "prompt": "a red circle"},
            "status": status,
            "createdAt": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
    )


def test_info_reports_the_seed_of_each_image_and_the_sampler() -> None:
    request = A1111Txt2ImgRequest(prompt="a red circle", batch_size=3, sampler_name="DDIM")
    spec = txt2img_spec(request, "m")
    job = finished_job(phase="Succeeded", seed=MAX_SEED - 1, modelDigest="f" * 64)
    info = info_of(job, spec, request, ["one", "two", "three"])
    assert info["seed"] == MAX_SEED - 1
    assert info["all_seeds"] == [MAX_SEED - 1, MAX_SEED, 0]  # as the worker seeds a batch
    assert (info["sampler_name"], info["sd_model_hash"]) == ("DDIM", "f" * 10)
    assert info["all_prompts"] == ["a red circle"] * 3
    assert (info["infotexts"], info["job_id"], info["interrupted"]) == (
        ["one", "two", "three"],
        "gj-abc",
        False,
    )
    assert info["job_timestamp"] == "20260102030405"
    json.dumps(info)


def test_a_cancelled_job_is_reported_interrupted() -> None:
    request = A1111Txt2ImgRequest(prompt="x")
    info = info_of(finished_job(phase="Cancelled"), txt2img_spec(request, "m"), request, [])
    assert (info["interrupted"], info["seed"], info["all_seeds"]) == (True, None, [])


def test_errors_take_a1111s_shape_with_the_field_errors() -> None:
    error = renamed(
        InvalidError(
            "bad",
            errors=[FieldError(field="guidanceScale", rule="maximum", message="at most 30")],
        )
    )
    failure = Failure(422, error.kind, error.title, error.detail, error.errors)
    response = render(None, failure)  # type: ignore[arg-type]
    body = json.loads(bytes(response.body))
    assert response.status_code == 422
    assert body["error"] == "validation"
    assert body["errors"] == [{"field": "cfg_scale", "rule": "maximum", "message": "at most 30"}]
    assert "cfg_scale" in body["detail"]


def test_base64_images_are_read_raw_or_as_data_uris() -> None:
    uri = png_data_uri(Image.new("RGB", (8, 8), "red"))
    raw = uri.split(",", 1)[1]
    assert decoded(uri, "mask") == decoded(raw, "mask") == base64.b64decode(raw)
    with pytest.raises(InvalidError) as refused:
        decoded("not base64!", "init_images")
    assert refused_fields(refused) == ["init_images"]


def circle_and_mask() -> tuple[Image.Image, Image.Image]:
    init = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(init).ellipse((16, 16, 47, 47), fill=(220, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((12, 12, 51, 51), fill=255)
    return init, mask


@pytest.mark.parametrize(
    ("fill", "centre"),
    [
        (InpaintingFill.ORIGINAL, (220, 30, 30)),
        (InpaintingFill.FILL, (255, 255, 255)),  # the mean of the white outside
        (InpaintingFill.LATENT_NOTHING, (128, 128, 128)),
    ],
)
def test_the_masked_area_is_filled_as_inpainting_fill_says(
    fill: InpaintingFill, centre: tuple[int, int, int]
) -> None:
    init, mask = circle_and_mask()
    painted, _ = inpaint_inputs(
        png_bytes(init), png_bytes(mask), blur=0, invert=False, fill=fill, seed=1
    )
    image = opened(painted)
    assert image.getpixel((32, 32)) == centre
    assert image.getpixel((2, 2)) == (255, 255, 255)


def test_latent_noise_fills_the_masked_area_with_seeded_noise() -> None:
    init, mask = circle_and_mask()

    def noise(seed: int) -> bytes:
        painted, _ = inpaint_inputs(
            png_bytes(init),
            png_bytes(mask),
            blur=0,
            invert=False,
            fill=InpaintingFill.LATENT_NOISE,
            seed=seed,
        )
        return opened(painted).crop((20, 20, 40, 40)).tobytes()

    assert noise(1) == noise(1) != noise(2)
    assert len(set(noise(1))) > 100


def test_the_mask_is_thresholded_inverted_and_blurred() -> None:
    init, mask = circle_and_mask()
    _, sharp = inpaint_inputs(
        png_bytes(init), png_bytes(mask), blur=0, invert=False, fill=InpaintingFill.FILL, seed=0
    )
    assert opened(sharp).getpixel((32, 32)) == 255
    assert opened(sharp).getpixel((2, 2)) == 0
    _, inverted = inpaint_inputs(
        png_bytes(init), png_bytes(mask), blur=0, invert=True, fill=InpaintingFill.FILL, seed=0
    )
    assert opened(inverted).getpixel((32, 32)) == 0
    _, soft = inpaint_inputs(
        png_bytes(init), png_bytes(mask), blur=4, invert=False, fill=InpaintingFill.FILL, seed=0
    )
    edge: Any = opened(soft).getpixel((12, 32))
    assert 0 < edge < 255  # blurred


def test_a_transparent_mask_is_read_by_its_alpha_and_resized_to_the_image() -> None:
    init, _ = circle_and_mask()
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=(0, 0, 0, 255))
    _, prepared = inpaint_inputs(
        png_bytes(init), png_bytes(mask), blur=0, invert=False, fill=InpaintingFill.FILL, seed=0
    )
    image = opened(prepared)
    assert image.size == (64, 64)
    assert (image.getpixel((32, 32)), image.getpixel((2, 2))) == (255, 0)
