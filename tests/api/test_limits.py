"""Limits per tenant: prompt length and upload pixels by tier, concurrent event streams
by tier (freed when a stream closes), and the namespaces no tenant may own."""

import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from diffleet_api import admin
from diffleet_api.settings import LARGEST_IMAGE_PIXELS, ApiSettings
from diffleet_core.resources.generation_job import MAX_PROMPT_LENGTH, Tier
from tests.api.images import jpeg_claiming, picture, png_bomb
from tests.api.support import Api, ApiTenant, create_tenant, model_cache
from tests.support.polling import eventually
from tests.support.stack import Kubectl

OCTETS = {"Content-Type": "application/octet-stream"}
JOB = {"model": "sd15-test", "prompt": "a lighthouse at dusk", "steps": 4}
ADMIN = Path(sys.executable).parent / "diffleet-admin"


def prompt_limit(tier: Tier) -> int:
    return ApiSettings().tier_limits[tier].prompt_max_length


def test_every_tier_is_bounded_and_no_tier_exceeds_the_crd() -> None:
    partial = ApiSettings(tier_limits={Tier.ENTERPRISE: {"requests_per_minute": 5}})
    for tier, tier_limits in partial.tier_limits.items():
        assert tier_limits.upload_max_pixels <= LARGEST_IMAGE_PIXELS, tier
        assert tier_limits.prompt_max_length <= MAX_PROMPT_LENGTH, tier
        assert tier_limits.event_streams >= 1, tier
    with pytest.raises(ValidationError, match="prompt_max_length"):
        ApiSettings(tier_limits={Tier.PRO: {"prompt_max_length": MAX_PROMPT_LENGTH + 1}})


@pytest.mark.parametrize(
    "namespace", ["diffleet-system", "kube-system", "kube-public", "kube-node-lease", "default"]
)
def test_admin_refuses_a_system_namespace(
    namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before any database or Kubernetes call: no stack is needed to see it.
    args = admin.parser().parse_args(["tenants", "create", "acme", "--namespace", namespace])
    assert args.run(args) == 2
    assert f"namespace {namespace!r} is a system namespace" in capsys.readouterr().err


def test_admin_exits_non_zero_for_a_tenant_named_after_a_system_namespace() -> None:
    # The namespace defaults to the tenant's id.
    result = subprocess.run(
        [ADMIN, "tenants", "create", "kube-system"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "'kube-system' is a system namespace" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_prompt_longer_than_the_tier_allows_is_422_naming_the_field(
    api: Api, tenant: ApiTenant
) -> None:
    allowed = prompt_limit(Tier.FREE)
    assert allowed < MAX_PROMPT_LENGTH
    with api.client(tenant.member) as http:
        long_prompt = http.post("/v1/jobs", json=JOB | {"prompt": "x" * (allowed + 1)})
        long_negative = http.post(
            "/v1/jobs:batch", json={"jobs": [JOB, JOB | {"negativePrompt": "y" * (allowed + 1)}]}
        )
        at_the_limit = http.post("/v1/jobs", json=JOB | {"prompt": "x" * allowed})
        jobs = http.get("/v1/jobs").json()["items"]

    assert long_prompt.status_code == 422
    assert long_prompt.headers["content-type"] == "application/problem+json"
    [error] = long_prompt.json()["errors"]
    assert (error["field"], error["rule"]) == ("prompt", "maxLength")
    assert f"at most {allowed}" in error["message"]
    assert long_negative.status_code == 422
    assert [(e["field"], e["rule"]) for e in long_negative.json()["errors"]] == [
        ("jobs[1].negativePrompt", "maxLength")
    ]
    assert at_the_limit.status_code == 201, at_the_limit.text
    assert len(jobs) == 1  # the refused submissions created nothing


def test_enterprise_prompts_reach_the_crd_limit(api: Api, namespace: str, kubectl: Kubectl) -> None:
    model_cache(kubectl, namespace, "sd15-test")
    enterprise = create_tenant(namespace, Tier.ENTERPRISE)
    with api.client(enterprise.member) as http:
        answer = http.post("/v1/jobs", json=JOB | {"prompt": "x" * MAX_PROMPT_LENGTH})
    assert prompt_limit(Tier.ENTERPRISE) == MAX_PROMPT_LENGTH
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("tier", list(Tier))
def test_upload_pixels_are_bounded_in_every_tier_before_decoding(
    api: Api, namespace: str, tier: Tier
) -> None:
    tenant = create_tenant(namespace, tier)
    max_pixels = ApiSettings().tier_limits[tier].upload_max_pixels
    with api.client(tenant.member) as http:
        # A few hundred bytes claiming 4096²: refused from the header, never decoded.
        claimed = http.post("/v1/uploads", content=jpeg_claiming(4096, 4096), headers=OCTETS)
        over = http.post("/v1/uploads", content=png_bomb(max_pixels // 64 + 1, 64), headers=OCTETS)
        small = http.post("/v1/uploads", content=picture("PNG", (64, 64)), headers=OCTETS)
    assert claimed.status_code == 413, claimed.text
    assert claimed.headers["content-type"] == "application/problem+json"
    assert "4096x4096" in claimed.json()["detail"]
    assert over.status_code == 413, over.text
    assert f"at most {max_pixels}" in over.json()["detail"]
    assert small.status_code == 201, small.text


def test_free_tier_uploads_stop_at_a_megapixel(api: Api, namespace: str) -> None:
    tenant = create_tenant(namespace, Tier.FREE)
    with api.client(tenant.member) as http:
        largest = http.post("/v1/uploads", content=picture("PNG", (1024, 1024)), headers=OCTETS)
        wider = http.post("/v1/uploads", content=png_bomb(1025, 1024), headers=OCTETS)
    assert largest.status_code == 201, largest.text
    assert wider.status_code == 413


def open_stream(http: httpx.Client, job_id: str, streams: ExitStack) -> httpx.Response:
    """Opens the job's event stream, kept open by `streams` when it is a 200."""
    response = streams.enter_context(http.stream("GET", f"/v1/jobs/{job_id}/events"))
    if response.status_code != 200:
        response.read()
    return response


def test_event_streams_per_tenant_are_bounded_and_a_closed_one_frees_its_slot(
    api: Api, tenant: ApiTenant
) -> None:
    allowed = ApiSettings().tier_limits[Tier.FREE].event_streams
    with api.client(tenant.member) as http, ExitStack() as streams:
        job = http.post("/v1/jobs", json=JOB).json()["id"]  # stays Pending: no operator here
        held = [open_stream(http, job, streams) for _ in range(allowed)]
        assert [response.status_code for response in held] == [200] * allowed
        first_events = held[0].iter_lines()  # kept: dropping it would close the stream
        assert next(first_events).startswith("id: ")

        refused = open_stream(http, job, streams)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert f"{allowed} event streams" in refused.json()["detail"]

        held[0].close()

        def reopened() -> bool:
            return open_stream(http, job, streams).status_code == 200

        eventually(reopened, timeout=10, what="a stream slot freed by a closed stream")
