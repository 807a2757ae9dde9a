"""The web console in a real browser (Debian's Chromium through Playwright) against a
real API, operator and worker (diffusers on the CPU, micro-shapes at 64x64): the shell
and its CSP, a generation watched from its previews to its output at the quoted cost, a
cancel, an inpaint with a painted mask, the gallery's pages, filters and deletion, the
usage page, the fleet for a platform key and not for a viewer, and a phone's width."""

import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Locator, Page, ViewportSize, expect

import diffleet_api
from diffleet_api.tokens import Role
from diffleet_core.resources.generation_job import Tier
from diffleet_core.resources.gpu_pool import FLEET_LABEL
from tests.api.support import Api, ApiTenant, api_with_real_worker, create_tenant
from tests.api.support import platform_key as support_platform_key
from tests.console.conftest import ConsoleErrors, screenshot
from tests.support.groups import DIFFUSERS
from tests.support.models import RegisteredModel
from tests.support.polling import eventually
from tests.support.stack import Kubectl

pytestmark = DIFFUSERS

MODEL = "micro-shapes"
# A real worker imports torch and diffusers before its first job, on 2 shared cores.
WORKER_START = 240
# A job of micro-shapes at 64x64, its model loaded once by the module's first job.
JOB_DONE = 180
ASSETS = Path(diffleet_api.__file__).parent / "console"
PHONE: ViewportSize = {"width": 375, "height": 800}
UNLABELLED_CONTROLS = """
() => [...document.querySelectorAll("input, select, textarea")]
  .filter((control) => control.type !== "hidden")
  .filter((control) => !control.labels?.length && !control.getAttribute("aria-label")
    && !control.getAttribute("aria-labelledby"))
  .map((control) => control.outerHTML.slice(0, 120))
"""
SCROLLS_SIDEWAYS = "() => document.documentElement.scrollWidth > window.innerWidth"


@pytest.fixture(scope="module")
def console_api(module_namespace: str, models: dict[str, RegisteredModel]) -> Iterator[Api]:
    with api_with_real_worker(module_namespace, WORKER_START) as api:
        yield api


@pytest.fixture(scope="module")
def owner(module_namespace: str) -> ApiTenant:
    """The tenant whose jobs the worker runs (enterprise: no rate limit is near)."""
    return create_tenant(module_namespace, Tier.ENTERPRISE)


@pytest.fixture(scope="module")
def platform_key(local_stack: dict[str, str]) -> Iterator[str]:
    with support_platform_key("test-console") as key:
        yield key


@pytest.fixture(scope="module")
def fleet_pool(kubectl: Kubectl, module_namespace: str) -> Iterator[str]:
    """A GPUPool of the module's fleet that can never scale (maxReplicas 0), so that the
    fleet lists it and the module's worker."""
    name = f"console-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": name, "labels": {FLEET_LABEL: module_namespace}},
        "spec": {"gpuType": name, "vramGiB": 16, "maxReplicas": 0, "tiers": ["free"]},
    }
    kubectl.apply(json.dumps(body))
    yield name
    kubectl.run("delete", "gpupool", name, "--wait=false", check=False)


def log_in(page: Page, api: Api, key: str) -> None:
    page.goto(f"{api.url}/console/")
    page.get_by_label("API key or token").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"#/(generate|fleet)$"))  # the home of the key's kind


def go(page: Page, route: str, heading: str) -> None:
    """Follows a route inside the logged-in page (a reload would log out)."""
    page.evaluate("(hash) => { location.hash = hash; }", route)
    expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()


def fill_job(page: Page, prompt: str, steps: int) -> None:
    """The Generate form: micro-shapes at 64x64 (the model first: it sets the size)."""
    page.get_by_label("Model", exact=True).select_option(MODEL)
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Width", exact=True).fill("64")
    page.get_by_label("Height", exact=True).fill("64")
    page.get_by_label("Steps", exact=True).fill(str(steps))


def submit(page: Page) -> tuple[str, dict[str, Any]]:
    """Clicks Generate; returns the job's id (from the page it opens) and the body sent."""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/jobs")) as sent:
        page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_url(re.compile(r"#/jobs/[^/?]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", level=1, name=f"Job {job_id}")).to_be_visible()
    body = sent.value.post_data_json
    assert isinstance(body, dict)
    return job_id, body


def credits_in(text: str) -> float:
    found = re.search(r"([\d.,]+) credits?", text)
    assert found, text
    return float(found.group(1).replace(",", ""))


def phase(page: Page) -> Locator:
    return page.locator("#phase")


def cards(page: Page) -> Locator:
    return page.get_by_role("list", name="Jobs").get_by_role("listitem")


def read_s3(uri: str) -> bytes:
    parts = urlsplit(uri)
    answer = boto3.client("s3").get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
    data: bytes = answer["Body"].read()
    return data


def circle_png() -> bytes:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), fill="red")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_shell_is_public_its_files_carry_a_strict_csp_and_data_needs_a_credential(
    console_api: Api,
) -> None:
    files = sorted(path.relative_to(ASSETS).as_posix() for path in ASSETS.rglob("*.*"))
    assert {"index.html", "js/app.js", "css/console.css"} <= set(files)
    with httpx.Client(base_url=console_api.url, timeout=10) as http:
        for name in files:
            answer = http.get("/console/" if name == "index.html" else f"/console/{name}")
            assert answer.status_code == 200, name
            policy = answer.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy, name
            assert "unsafe-inline" not in policy, name
        assert http.get("/v1/jobs").status_code == 401
        assert http.get("/v1/usage").status_code == 401


def test_generate_shows_the_quoted_cost_then_the_previews_then_the_output(
    page: Page, console_api: Api, owner: ApiTenant
) -> None:
    log_in(page, console_api, owner.member)
    expect(page.get_by_role("heading", level=1, name="Generate")).to_be_visible()
    with page.expect_response(lambda r: "/v1/jobs:quote" in r.url):
        fill_job(page, "a red circle", steps=60)
    cost = page.locator("output").filter(has_text="Cost")
    expect(cost).to_have_text(re.compile(r"Cost: [\d.,]+ credits?"))
    screenshot(page, "generate")
    shown = credits_in(cost.inner_text())

    _, body = submit(page)
    with console_api.client(owner.member) as http:
        quote = http.post("/v1/jobs:quote", json=body).json()
    assert shown == quote["cost"]
    assert (body["model"], body["width"], body["height"]) == (MODEL, 64, 64)

    preview = page.get_by_role("img", name="Preview")
    expect(preview).to_have_attribute("src", re.compile(r"^data:image/"), timeout=JOB_DONE * 1000)
    screenshot(page, "job-live")
    output = page.get_by_role("img", name="Output 1")
    expect(output).to_be_visible(timeout=JOB_DONE * 1000)
    expect(phase(page)).to_have_text("Phase: Succeeded")
    assert output.evaluate("(image) => image.complete && image.naturalWidth") == 64
    expect(page.get_by_role("link", name="Download output 1")).to_be_visible()
    screenshot(page, "job-result")


def test_cancel_stops_a_running_job(
    page: Page, console_api: Api, owner: ApiTenant, kubectl: Kubectl
) -> None:
    log_in(page, console_api, owner.member)
    expect(page.get_by_role("heading", level=1, name="Generate")).to_be_visible()
    fill_job(page, "a blue square", steps=150)
    job_id, _ = submit(page)
    expect(phase(page)).to_have_text("Phase: Running", timeout=JOB_DONE * 1000)
    page.get_by_role("button", name="Cancel").click()
    expect(phase(page)).to_have_text("Phase: Cancelled", timeout=60_000)
    resource = kubectl.json("get", "gj", job_id, "-n", owner.namespace)
    assert resource["spec"]["cancel"] is True
    assert resource["status"]["phase"] == "Cancelled"


def test_inpaint_sends_the_painted_mask_white_where_painted(
    page: Page, console_api: Api, owner: ApiTenant, tmp_path: Path
) -> None:
    log_in(page, console_api, owner.member)
    expect(page.get_by_role("heading", level=1, name="Generate")).to_be_visible()
    page.get_by_label("Mode", exact=True).select_option("inpaint")
    fill_job(page, "a green circle", steps=10)
    init = tmp_path / "circle.png"
    init.write_bytes(circle_png())
    page.get_by_label("Init image", exact=True).set_input_files(init)
    expect(page.get_by_role("img", name="Init image")).to_be_visible()
    canvas = page.locator('canvas[aria-label="Mask"]')
    box = canvas.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=10)
    page.mouse.up()
    screenshot(page, "inpaint-mask")

    _, body = submit(page)
    assert body["mode"] == "inpaint"
    expect(phase(page)).to_have_text("Phase: Succeeded", timeout=JOB_DONE * 1000)
    mask = Image.open(io.BytesIO(read_s3(body["maskImage"]))).convert("L")
    assert mask.size == (64, 64)
    pixels = np.asarray(mask)  # [row, column]: the stroke crossed row 32 from 19 to 45
    painted = pixels[32, 24:41]
    edges = np.concatenate([pixels[0], pixels[63], pixels[:, 0], pixels[:, 63]])
    assert painted.min() >= 250, painted
    assert edges.max() <= 5, edges


def finished(http: httpx.Client, job_ids: list[str]) -> bool:
    listed = http.get("/v1/jobs", params={"limit": 500}).json()["items"]
    phases = {job["id"]: job["status"].get("phase") for job in listed}
    return all(phases.get(job) in ("Succeeded", "Failed", "Cancelled") for job in job_ids)


def test_the_gallery_pages_filters_and_deletes_outputs(
    page: Page, console_api: Api, owner: ApiTenant, console_errors: ConsoleErrors
) -> None:
    spec = {"model": MODEL, "prompt": "a red circle", "width": 64, "height": 64, "steps": 2}
    with console_api.client(owner.member) as http:
        existing = len(http.get("/v1/jobs", params={"limit": 500}).json()["items"])
        assert existing <= 10, "the module's other tests made more jobs than the pages allow"
        created = [http.post("/v1/jobs", json=spec).json()["id"] for _ in range(15 - existing)]
        # Four run, the others are cancelled at once. The list goes by name (Kubernetes'
        # order): page 1 holds 12 of the 15, so at least one that ran.
        for job_id in created[4:]:
            http.delete(f"/v1/jobs/{job_id}")
        eventually(lambda: finished(http, created), timeout=JOB_DONE, what="the gallery's jobs end")
    log_in(page, console_api, owner.member)
    go(page, "#/gallery", "Gallery")
    expect(cards(page)).to_have_count(12)
    expect(page.get_by_text("Page 1", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    screenshot(page, "gallery")

    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text("Page 2", exact=True)).to_be_visible()
    expect(cards(page)).to_have_count(3)
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Previous page").click()
    expect(page.get_by_text("Page 1", exact=True)).to_be_visible()
    expect(cards(page)).to_have_count(12)
    page.get_by_label("Model", exact=True).select_option("tiny-sdxl")
    expect(cards(page)).to_have_text(["No jobs on this page."])
    page.get_by_label("Model", exact=True).select_option(MODEL)
    expect(cards(page)).to_have_count(12)

    page.get_by_label("State", exact=True).select_option("Cancelled")
    expect(cards(page).filter(has_text="Succeeded")).to_have_count(0)
    assert cards(page).filter(has_text="Cancelled").count() == cards(page).count() > 0

    page.get_by_label("State", exact=True).select_option("Succeeded")
    expect(cards(page).filter(has_text="Cancelled")).to_have_count(0)
    assert cards(page).filter(has_text="Succeeded").count() == cards(page).count() > 0
    deletable = cards(page).filter(has=page.get_by_role("button", name="Delete outputs")).first
    job_id = (deletable.get_by_role("img").get_attribute("alt") or "").removeprefix("Job ")
    page.once("dialog", lambda dialog: dialog.accept())
    deletable.get_by_role("button", name="Delete outputs").click()
    expect(page.get_by_role("status")).to_have_text(f"Deleted the outputs of job {job_id}.")
    expect(page.get_by_role("img", name=f"Job {job_id}")).to_have_count(0)
    with console_api.client(owner.member) as http:
        assert http.get(f"/v1/jobs/{job_id}").json()["outputsDeletedAt"] is not None


def test_usage_shows_the_balance_rate_limits_and_ledger(
    page: Page, console_api: Api, module_namespace: str, console_errors: ConsoleErrors
) -> None:
    # A tenant of its own (no jobs: a known ledger) without a namespace of its own, so
    # no model: the Generate page (its home) quotes its first form in vain.
    console_errors.expect_failed_request(422, "/v1/jobs:quote")
    tenant = create_tenant(f"{module_namespace}-usage", Tier.ENTERPRISE, credits="1234.5")
    log_in(page, console_api, tenant.member)
    go(page, "#/usage", "Usage")
    expect(page.locator("dd").first).to_have_text("1,234.5 credits")
    limits = page.get_by_role("table", name="Rate limits")
    requests = limits.get_by_role("row").filter(has_text="requests")
    expect(requests).to_contain_text("/ 2000 per minute")
    expect(limits.get_by_role("row").filter(has_text="generations")).to_contain_text(
        "1000 / 1000 per hour"
    )
    ledger = page.get_by_role("table", name="Ledger")
    expect(ledger.get_by_role("row").filter(has_text="starting balance")).to_contain_text("1,234.5")
    screenshot(page, "usage")


def test_a_viewer_sees_no_fleet(page: Page, console_api: Api, owner: ApiTenant) -> None:
    log_in(page, console_api, owner.keys[Role.VIEWER])
    expect(page.get_by_role("link", name="Gallery")).to_be_visible()
    expect(page.get_by_role("link", name="Fleet")).to_be_hidden()
    go(page, "#/fleet", "Not available")
    expect(page.get_by_role("alert")).to_contain_text("platform")


def test_a_platform_key_sees_the_fleet_update_live(
    page: Page,
    console_api: Api,
    platform_key: str,
    fleet_pool: str,
    console_errors: ConsoleErrors,
) -> None:
    console_errors.expect_failed_request(401, "/v1/usage")  # how the login tells the kind
    log_in(page, console_api, platform_key)
    expect(page.get_by_role("heading", level=1, name="Fleet")).to_be_visible()
    expect(page.get_by_role("link", name="Generate")).to_be_hidden()
    pools = page.get_by_role("table", name="Pools")
    expect(pools.get_by_role("row").filter(has_text=fleet_pool)).to_have_count(1)
    workers = page.get_by_role("table", name="Workers")
    expect(workers.get_by_role("row").filter(has_text="cpu")).to_contain_text("t4")
    updated = page.get_by_text(re.compile(r"^Updated "))
    first = updated.inner_text()
    expect(updated).not_to_have_text(first, timeout=10_000)
    for heading in ("Pools", "Queues", "Workers", "Models", "Recent autoscaler decisions"):
        expect(page.get_by_role("heading", level=2, name=heading)).to_be_visible()
    screenshot(page, "fleet")


def test_generate_and_gallery_fit_a_phone_and_every_control_has_a_label(
    page: Page, console_api: Api, owner: ApiTenant, console_errors: ConsoleErrors
) -> None:
    # The list does not say whose outputs were deleted (the gallery's test deletes one):
    # the gallery asks each Succeeded job's outputs and shows a 409 as "Outputs deleted".
    console_errors.expect_failed_request(409, "/outputs")
    page.set_viewport_size(PHONE)
    log_in(page, console_api, owner.member)
    expect(page.get_by_role("heading", level=1, name="Generate")).to_be_visible()
    page.get_by_label("Mode", exact=True).select_option("inpaint")
    expect(page.get_by_label("Brush size", exact=True)).to_be_visible()
    assert page.evaluate(SCROLLS_SIDEWAYS) is False
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    screenshot(page, "phone-generate")
    go(page, "#/gallery", "Gallery")
    expect(cards(page).first).to_be_visible()
    assert page.evaluate(SCROLLS_SIDEWAYS) is False
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    screenshot(page, "phone-gallery")
