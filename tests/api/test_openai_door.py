"""The OpenAI Images API door with the official `openai` SDK, on micro-shapes through the
real operator and a real worker: generations (b64_json and url), an edit with a mask, a
variation; the images draw the prompt's colour, each request is a job like POST /v1/jobs
makes (same spec, cost, ledger and history), and every error is the SDK's own exception."""

import base64
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image, ImageDraw

from diffleet_api.doors.openai.errors import JOB_HEADER
from diffleet_api.kube import DOOR_LABEL, END_USER_ANNOTATION
from diffleet_api.tokens import Role
from diffleet_core.resources.generation_job import Tier
from tests.api.support import Api, ApiTenant, api_with_real_worker, create_tenant, spawn_api
from tests.support.groups import DIFFUSERS
from tests.support.models import RegisteredModel, dominant_colour
from tests.support.pictures import opened, png_bytes
from tests.support.polling import eventually
from tests.support.stack import Kubectl

pytestmark = DIFFUSERS

MODEL = "micro-shapes"
# micro-shapes draws at 64x64 in 20 steps (the platform's default steps).
SHAPES = {"width": 64, "height": 64}
# A real worker imports torch and diffusers before its first job, on 2 shared cores.
WORKER_START = 240
DOOR_WAIT = 240


@pytest.fixture(scope="module")
def door_api(module_namespace: str, models: dict[str, RegisteredModel]) -> Iterator[Api]:
    """The door's default model is micro-shapes."""
    settings = {"door_default_model": MODEL, "door_wait_seconds": str(DOOR_WAIT)}
    with api_with_real_worker(module_namespace, WORKER_START, **settings) as api:
        yield api


@pytest.fixture(scope="module")
def owner(module_namespace: str) -> ApiTenant:
    return create_tenant(module_namespace, Tier.ENTERPRISE)


@pytest.fixture(scope="module")
def client(door_api: Api, owner: ApiTenant) -> openai.OpenAI:
    return sdk(door_api, owner.member)


def sdk(api: Api, key: str, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{api.url}/v1", api_key=key, max_retries=max_retries, timeout=DOOR_WAIT + 30
    )


def circle(colour: str) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), fill=colour)
    return image


def job_of(http: httpx.Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
    return job


def ledger_of(http: httpx.Client, uid: str) -> list[tuple[str, float]]:
    ledger = http.get("/v1/usage", params={"limit": 1000}).json()["ledger"]
    return sorted((entry["kind"], entry["amount"]) for entry in ledger if entry["jobUid"] == uid)


def test_generate_b64_json_draws_the_prompts_colour(
    client: openai.OpenAI, door_api: Api, owner: ApiTenant, kubectl: Kubectl
) -> None:
    raw = client.images.with_raw_response.generate(
        model="dall-e-3",
        prompt="a red circle",
        n=3,
        size="64x64",
        response_format="b64_json",
        user="end-user-7",
        extra_body={"seed": 100},
    )
    answer = raw.parse()
    assert answer.data is not None
    assert len(answer.data) == 3
    assert (answer.size, answer.output_format) == ("64x64", "png")
    images = [opened(base64.b64decode(item.b64_json or "")) for item in answer.data]
    assert {image.size for image in images} == {(64, 64)}
    assert {item.revised_prompt for item in answer.data} == {"a red circle"}
    colours = [dominant_colour(image) for image in images]
    assert colours.count("red") >= 2, colours

    job_id = raw.headers[JOB_HEADER]
    with door_api.client(owner.member) as http:
        job = job_of(http, job_id)
    assert job["spec"]["model"] == MODEL
    assert (job["spec"]["batchSize"], job["spec"]["seed"]) == (3, 100)
    body = kubectl.json("get", "gj", job_id, "-n", owner.namespace)
    assert body["metadata"]["labels"][DOOR_LABEL] == "openai"
    assert body["metadata"]["annotations"][END_USER_ANNOTATION] == "end-user-7"


def test_generate_url_is_the_job_credits_and_history_of_post_v1_jobs(
    client: openai.OpenAI, door_api: Api, owner: ApiTenant
) -> None:
    raw = client.images.with_raw_response.generate(
        prompt="a blue square", size="64x64", n=1, extra_body={"seed": 105}
    )
    answer = raw.parse()
    assert answer.data is not None
    [item] = answer.data
    assert item.url is not None
    door_image = httpx.get(item.url, timeout=10).content
    assert dominant_colour(opened(door_image)) == "blue"

    spec = {"model": MODEL, "prompt": "a blue square", "batchSize": 1, "seed": 105} | SHAPES
    with door_api.client(owner.member) as http:
        rest = http.post("/v1/jobs", json=spec).json()
        eventually(
            lambda: job_of(http, rest["id"])["status"].get("phase") == "Succeeded",
            timeout=DOOR_WAIT,
            what="the REST job succeeded",
        )
        door_job, rest_job = job_of(http, raw.headers[JOB_HEADER]), job_of(http, rest["id"])
        assert door_job["spec"] == rest_job["spec"]
        assert Decimal(str(door_job["cost"])) == Decimal(str(rest_job["cost"]))

        def settled() -> list[list[tuple[str, float]]] | None:
            ledgers = [ledger_of(http, job["uid"]) for job in (door_job, rest_job)]
            done = all("settle" in {kind for kind, _ in ledger} for ledger in ledgers)
            return ledgers if done else None

        door_ledger, rest_ledger = eventually(settled, timeout=60, what="both jobs settled")
        assert door_ledger == rest_ledger
        listed = {job["id"] for job in http.get("/v1/jobs", params={"limit": 500}).json()["items"]}
        assert {door_job["id"], rest_job["id"]} <= listed
        [output] = http.get(f"/v1/jobs/{rest_job['id']}/outputs").json()["items"]
    rest_image = httpx.get(output["url"], timeout=10).content
    assert dominant_colour(opened(rest_image)) == "blue"


def test_an_edit_with_a_mask_repaints_its_transparent_area(
    client: openai.OpenAI, door_api: Api, owner: ApiTenant
) -> None:
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((8, 8, 55, 55), fill=(0, 0, 0, 0))
    raw = client.images.with_raw_response.edit(
        image=("red.png", png_bytes(circle("red")), "image/png"),
        mask=("mask.png", png_bytes(mask), "image/png"),
        prompt="a blue circle",
        response_format="b64_json",
        extra_body={"seed": 101},
    )
    answer = raw.parse()
    assert answer.data is not None
    [item] = answer.data
    edited = opened(base64.b64decode(item.b64_json or ""))
    assert edited.size == (64, 64)
    assert dominant_colour(edited) == "blue"
    # The opaque border of the mask is kept: the image's white (the mask is feathered
    # by a few pixels inwards of it).
    corners = np.asarray(edited.convert("RGB"))[[1, 1, 62, 62], [1, 62, 1, 62]]
    assert corners.min() >= 240, corners
    with door_api.client(owner.member) as http:
        spec = job_of(http, raw.headers[JOB_HEADER])["spec"]
    assert (spec["mode"], spec["strength"], spec["width"], spec["height"]) == (
        "inpaint",
        1.0,
        64,
        64,
    )
    assert spec["maskImage"].startswith("s3://")
    assert spec["initImage"].startswith("s3://")


def test_a_variation_is_an_img2img_job_of_the_image(
    client: openai.OpenAI, door_api: Api, owner: ApiTenant
) -> None:
    raw = client.images.with_raw_response.create_variation(
        image=("green.png", png_bytes(circle("green")), "image/png"), response_format="b64_json"
    )
    answer = raw.parse()
    assert answer.data is not None
    assert opened(base64.b64decode(answer.data[0].b64_json or "")).size == (64, 64)
    with door_api.client(owner.member) as http:
        spec = job_of(http, raw.headers[JOB_HEADER])["spec"]
    assert (spec["mode"], spec["prompt"], spec["strength"]) == (
        "img2img",
        "a variation of the image",
        0.6,
    )


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"stream": True}, "stream", "unsupported_parameter"),
        ({"n": 9}, "n", "invalid_value"),
        ({"size": "100x100"}, "size", "invalid_value"),
        ({"background": "transparent"}, "background", "unsupported_parameter"),
        ({"output_format": "gif"}, "output_format", "unsupported_parameter"),
        ({"model": "no-such-model"}, "model", "model_not_found"),
        ({"style": "no-such-style"}, "style", "invalid_value"),
        ({"extra_body": {"colour": "red"}}, "colour", "unknown_parameter"),
    ],
)
def test_a_refused_parameter_is_a_bad_request_naming_it(
    client: openai.OpenAI, fields: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a red circle", **fields)
    assert (raised.value.param, raised.value.code) == (param, code)
    assert raised.value.type == "invalid_request_error"


def test_an_edit_refuses_several_images_and_a_mask_of_another_size(
    client: openai.OpenAI,
) -> None:
    image = ("red.png", png_bytes(circle("red")), "image/png")
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(image=[image, image], prompt="a blue circle")
    assert raised.value.param == "image"
    small = ("mask.png", png_bytes(Image.new("RGBA", (32, 32))), "image/png")
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(image=image, mask=small, prompt="a blue circle")
    assert raised.value.param == "mask"


def test_credentials_and_credits_are_the_sdks_own_errors(
    door_api: Api, owner: ApiTenant, namespace: str
) -> None:
    with pytest.raises(openai.AuthenticationError) as unknown:
        sdk(door_api, "dfl_not_a_key").images.generate(prompt="a red circle")
    assert unknown.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as viewer:
        sdk(door_api, owner.keys[Role.VIEWER]).images.generate(prompt="a red circle")
    assert viewer.value.code == "permission_denied"
    broke = create_tenant(namespace, Tier.ENTERPRISE, credits="0")
    with pytest.raises(openai.RateLimitError) as quota:
        sdk(door_api, broke.member, max_retries=2).images.generate(prompt="a red circle")
    assert (quota.value.type, quota.value.code) == ("insufficient_quota", "insufficient_quota")
    assert quota.value.response.headers["x-should-retry"] == "false"


def test_past_the_wait_a_504_names_the_job_and_is_not_retried(
    namespace: str, kubectl: Kubectl, models: dict[str, RegisteredModel]
) -> None:
    """No operator runs for this namespace: the job waits, past the door's wait."""
    tenant = create_tenant(namespace, Tier.ENTERPRISE)
    [api] = spawn_api(namespace, door_default_model=MODEL, door_wait_seconds="1", watcher="false")
    try:
        with pytest.raises(openai.InternalServerError) as raised:
            sdk(api, tenant.member, max_retries=2).images.generate(prompt="a red circle")
        error = raised.value
        assert (error.status_code, error.code) == (504, "job_still_running")
        assert isinstance(error.body, dict)
        job_id = error.body["job_id"]
        assert job_id in error.message
        with api.client(tenant.member) as http:
            listed = [job["id"] for job in http.get("/v1/jobs").json()["items"]]
        assert listed == [job_id]
    finally:
        api.process.stop()
