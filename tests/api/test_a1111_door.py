"""The Automatic1111 door with the real `webuiapi` client (HTTP Basic auth, the key as
password), on micro-shapes through the real operator and a real worker: txt2img with a
seed and a sampler, img2img, inpaint with a mask, progress with live previews, interrupt;
the job, credits and history the same as for POST /v1/jobs; errors in A1111's shape."""

import base64
import io
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import webuiapi  # type: ignore[import-untyped]
from PIL import Image, ImageDraw

from diffleet_core.resources.generation_job import Tier
from tests.api.support import Api, ApiTenant, connect, create_tenant, spawn_api
from tests.support.groups import DIFFUSERS
from tests.support.models import RegisteredModel, dominant_colour
from tests.support.platform import Platform
from tests.support.polling import eventually

pytestmark = DIFFUSERS

# A real worker imports torch and diffusers, then loads its model, on 2 shared cores.
WORKER_START = 240
DOOR_WAIT = 240
SHAPES = {"width": 64, "height": 64, "steps": 20}
CHECKPOINT = {"sd_model_checkpoint": "micro-shapes"}
RED = (220, 30, 30)


@pytest.fixture(scope="module")
def door_platform(module_namespace: str, models: dict[str, RegisteredModel]) -> Iterator[None]:
    """An operator and one real worker that sends a live preview every step."""
    platform = Platform(namespace=module_namespace, job_namespaces=[module_namespace])
    operator = platform.operator()
    platform.worker("w1", simulate=False, preview_every_steps="1")
    platform.wait_for_workers(operator, "t4", 1, timeout=WORKER_START)
    yield
    platform.stop_all()


@pytest.fixture(scope="module")
def door_api(module_namespace: str, models: dict[str, RegisteredModel]) -> Iterator[Api]:
    """The door's API; the platform's models (micro-shapes) are registered first, as
    every test lists or runs them."""
    [started] = spawn_api(module_namespace, door_wait_seconds=str(DOOR_WAIT))
    yield started
    started.process.stop()


@pytest.fixture(scope="module")
def door_tenant(module_namespace: str) -> ApiTenant:
    return create_tenant(module_namespace, tier=Tier.PRO)


@pytest.fixture
def webui(door_api: Api, door_tenant: ApiTenant, door_platform: None) -> webuiapi.WebUIApi:
    """webuiapi as its users make it with `--api-auth` (it asks GET /scripts at once)."""
    return webuiapi.WebUIApi(
        baseurl=f"{door_api.url}/sdapi/v1", username="key", password=door_tenant.member
    )


def basic(door_api: Api, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{door_api.url}/sdapi/v1", auth=("key", key), timeout=30)


def png(data: str) -> Image.Image:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        image.load()
        assert image.format == "PNG"
        return image.copy()


def test_errors_auth_and_listings_in_a1111s_shape(door_api: Api, door_tenant: ApiTenant) -> None:
    with basic(door_api, door_tenant.member) as http:
        refused = http.post(
            "/txt2img", json={"prompt": "a red circle", "tiling": True, "sampler_name": "Nope"}
        )
        assert refused.status_code == 422
        body = refused.json()
        assert body["error"] == "validation"
        assert [error["field"] for error in body["errors"]] == ["tiling"]
        assert "tiling" in body["detail"]
        sampler = http.post("/txt2img", json={"prompt": "x", "sampler_name": "Nope"})
        assert [error["field"] for error in sampler.json()["errors"]] == ["sampler_name"]
        unknown = http.post(
            "/txt2img",
            json={"prompt": "x", "override_settings": {"sd_model_checkpoint": "no-such-model"}},
        )
        assert unknown.status_code == 422
        assert unknown.json()["errors"][0]["field"] == "override_settings.sd_model_checkpoint"
        options = http.post("/options", json={"sd_model_checkpoint": "no-such-model"})
        assert options.status_code == 422
        assert options.json()["errors"][0]["field"] == "sd_model_checkpoint"
        assert http.get("/scripts").json() == {"txt2img": [], "img2img": []}
        missing = http.get("/no-such-route")
        assert (missing.status_code, missing.json()["error"]) == (404, "not-found")
    with basic(door_api, "dfl_" + "a" * 40) as http:
        denied = http.get("/sd-models")
        assert denied.status_code == 401
        assert set(denied.json()) == {"error", "detail", "body", "errors"}
    bearer = {"Authorization": f"Bearer {door_tenant.member}"}
    models = httpx.get(f"{door_api.url}/sdapi/v1/sd-models", headers=bearer, timeout=30).json()
    shapes = next(model for model in models if model["model_name"] == "micro-shapes")
    assert shapes["title"] == f"micro-shapes [{shapes['sha256'][:10]}]"
    assert shapes["hash"] == shapes["sha256"][:10]


def test_txt2img_with_a_seed_and_sampler_is_the_job_post_v1_jobs_makes(
    webui: webuiapi.WebUIApi, door_api: Api, door_tenant: ApiTenant
) -> None:
    samplers = {sampler["name"] for sampler in webui.get_samplers()}
    assert {"Euler a", "DPM++ 2M", "DPM++ 2M Karras"} <= samplers
    result = webui.txt2img(
        prompt="a red circle",
        seed=100,
        sampler_name="DPM++ 2M",
        scheduler="Karras",
        cfg_scale=7,
        override_settings=CHECKPOINT,
        **SHAPES,
    )
    assert len(result.images) == 1
    assert result.image.size == (64, 64)
    assert dominant_colour(result.image) == "red"
    info = result.info
    assert (info["seed"], info["all_seeds"], info["sampler_name"]) == (
        100,
        [100],
        "DPM++ 2M Karras",
    )
    assert info["sd_model_name"] == "micro-shapes"
    [infotext] = info["infotexts"]
    assert infotext.startswith("a red circle\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7")
    assert f"Seed: 100, Size: 64x64, Model hash: {info['sd_model_hash']}" in infotext
    assert result.image.info["parameters"] == infotext
    assert (result.parameters["seed"], result.parameters["sampler_name"]) == (100, "DPM++ 2M")

    # The same request through POST /v1/jobs: the same job, cost, image and credits.
    spec = {
        "model": "micro-shapes",
        "prompt": "a red circle",
        "seed": 100,
        "sampler": "dpmpp_2m_karras",
        "guidanceScale": 7.0,
    } | SHAPES
    with door_api.client(door_tenant.member) as http:
        rest = http.post("/v1/jobs", json=spec).json()
        door = http.get(f"/v1/jobs/{info['job_id']}").json()

        def rest_finished() -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/v1/jobs/{rest['id']}").json()
            return job if job["status"].get("phase") == "Succeeded" else None

        rest = eventually(rest_finished, timeout=DOOR_WAIT, what="the REST job succeeded")
        assert door["spec"] == rest["spec"]
        assert door["cost"] == rest["cost"]
        assert door["status"]["phase"] == "Succeeded"
        [output] = http.get(f"/v1/jobs/{rest['id']}/outputs").json()["items"]
        assert httpx.get(output["url"], timeout=10).content == base64.b64decode(
            result.json["images"][0]
        )
        listed = {job["id"] for job in http.get("/v1/jobs", params={"limit": 500}).json()["items"]}
        assert {door["id"], rest["id"]} <= listed

        def ledger_of(uid: str) -> list[tuple[str, float]] | None:
            entries = http.get("/v1/usage", params={"limit": 1000}).json()["ledger"]
            kinds = sorted(
                (entry["kind"], entry["amount"]) for entry in entries if entry["jobUid"] == uid
            )
            return kinds if any(kind == "settle" for kind, _ in kinds) else None

        door_ledger = eventually(lambda: ledger_of(door["uid"]), timeout=30, what="door settled")
        assert door_ledger == eventually(lambda: ledger_of(rest["uid"]), timeout=30, what="settled")
    with connect() as connection:
        rows = connection.execute(
            "select uid, spec, cost, credits from jobs where uid in (%s, %s)",
            (door["uid"], rest["uid"]),
        ).fetchall()
    recorded = {uid: (spec, cost, credits) for uid, spec, cost, credits in rows}
    assert recorded[door["uid"]] == recorded[rest["uid"]]
    assert recorded[door["uid"]][1] == Decimal(str(door["cost"]))


def test_img2img_at_low_strength_keeps_the_init_images_colour_from_the_callers_checkpoint(
    webui: webuiapi.WebUIApi,
) -> None:
    titles = [model["title"] for model in webui.get_sd_models()]
    title = next(title for title in titles if title.startswith("micro-shapes ["))
    webui.set_options({"sd_model_checkpoint": title})
    assert webui.get_options()["sd_model_checkpoint"] == title
    init = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(init).ellipse((16, 16, 47, 47), fill=RED)
    result = webui.img2img(
        images=[init], prompt="a green square", denoising_strength=0.3, seed=3, **SHAPES
    )
    assert dominant_colour(result.image) == "red"
    assert result.info["denoising_strength"] == 0.3
    assert result.info["sd_model_name"] == "micro-shapes"  # the caller's default
    assert "Denoising strength: 0.3" in result.info["infotexts"][0]
    assert result.parameters["init_images"] is None  # include_init_images false


def test_inpaint_paints_the_masked_area_in_the_prompts_colour(
    webui: webuiapi.WebUIApi,
) -> None:
    init = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(init).rectangle((0, 0, 9, 63), fill=RED)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 0, 63, 63), fill=255)
    result = webui.img2img(
        images=[init],
        mask_image=mask,
        inpainting_fill=1,
        denoising_strength=1.0,
        prompt="a blue circle",
        seed=100,
        override_settings=CHECKPOINT,
        **SHAPES,
    )
    painted = result.image.convert("RGB")
    assert dominant_colour(painted.crop((16, 0, 64, 64))) == "blue"
    assert dominant_colour(painted.crop((0, 0, 8, 64))) == "red"  # outside the mask, kept


def test_progress_shows_live_previews_and_interrupt_ends_the_waiting_txt2img(
    webui: webuiapi.WebUIApi, door_api: Api, door_tenant: ApiTenant
) -> None:
    assert webui.get_progress()["current_image"] is None
    answers: list[Any] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            webui.txt2img(
                prompt="a green triangle",
                width=512,
                height=512,
                steps=150,
                override_settings=CHECKPOINT,
            )
        )
    )
    waiting.start()
    try:

        def previewing() -> dict[str, Any] | None:
            progress: dict[str, Any] = webui.get_progress()
            return progress if progress["current_image"] else None

        progress = eventually(previewing, timeout=WORKER_START, what="a live preview")
        assert 0 < progress["progress"] < 1
        assert progress["state"]["sampling_steps"] == 150
        assert 0 < progress["state"]["sampling_step"] < 150
        assert progress["state"]["job_count"] == 1
        width, height = png(progress["current_image"]).size
        assert width == height < 512  # at latent resolution
        assert webui.interrupt() == {}
    finally:
        waiting.join(timeout=DOOR_WAIT)
    [result] = answers
    assert result.images == []
    assert result.info["interrupted"] is True
    assert webui.get_progress()["state"]["job_count"] == 0
    with door_api.client(door_tenant.member) as http:
        job = http.get(f"/v1/jobs/{result.info['job_id']}").json()
    assert job["status"]["phase"] == "Cancelled"


def test_a_job_past_the_doors_wait_is_a_504_naming_it_and_runs_on(
    module_namespace: str, door_api: Api, door_tenant: ApiTenant, door_platform: None
) -> None:
    [impatient] = spawn_api(module_namespace, door_wait_seconds="2", watcher="false")
    try:
        with basic(impatient, door_tenant.member) as http:
            waited = http.post(
                "/txt2img",
                json={
                    "prompt": "a blue square",
                    "width": 512,
                    "height": 512,
                    "steps": 150,
                    "override_settings": CHECKPOINT,
                },
            )
            assert waited.status_code == 504
            body = waited.json()
            assert body["error"] == "job-still-running"
            job_id = waited.headers["Location"].removeprefix("/v1/jobs/")
            assert job_id in body["detail"]
            with door_api.client(door_tenant.member) as rest:
                assert rest.get(f"/v1/jobs/{job_id}").json()["status"].get("phase") not in (
                    "Succeeded",
                    "Failed",
                    "Cancelled",
                )
                assert http.post("/interrupt").json() == {}

                def cancelled() -> bool:
                    job = rest.get(f"/v1/jobs/{job_id}").json()
                    return bool(job["status"].get("phase") == "Cancelled")

                eventually(cancelled, timeout=60, what="the job cancelled")
    finally:
        impatient.process.stop()
