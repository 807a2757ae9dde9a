"""Style presets at the REST door: GET /v1/styles lists the tenant's presets, then the
platform's; a job's style is applied to price it (credits follow the preset's size where
the job sets none), the GenerationJob carries only the fields the client set, and a style
that exists nowhere is refused naming the job's `style` field."""

from tests.api.support import Api, ApiTenant
from tests.api.test_jobs import SPEC
from tests.support.platform import style_preset
from tests.support.stack import Kubectl

SHIPPED = {"anime", "cinematic", "line-art", "photographic", "watercolor"}


def test_styles_are_listed_priced_and_an_unknown_one_refused(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    poster = style_preset("poster", prompt="poster of {prompt}", width=1024, height=1024)
    kubectl.apply(poster, tenant.namespace)
    with api.client(tenant.member) as http:
        listed = http.get("/v1/styles")
        unknown = http.post("/v1/jobs", json=SPEC | {"style": "none-such"})
        styled = http.post("/v1/jobs", json=SPEC | {"style": "poster"})
        narrow = http.post("/v1/jobs", json=SPEC | {"style": "poster", "width": 512})
        plain = http.post("/v1/jobs", json=SPEC)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    own = {"id": "poster", "namespace": tenant.namespace, "platform": False}
    assert {key: items[0][key] for key in own} == own
    stated = {key: value for key, value in items[0]["spec"].items() if value is not None}
    assert stated == {"prompt": "poster of {prompt}", "width": 1024, "height": 1024}
    assert {item["id"] for item in items[1:] if item["platform"]} >= SHIPPED
    assert all(item["namespace"] == "diffleet-system" for item in items[1:])

    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["errors"] == [
        {
            "field": "style",
            "rule": "exists",
            "message": f"no StylePreset 'none-such' in namespace {tenant.namespace!r} or"
            " 'diffleet-system'",
        }
    ]
    # 1024x1024 is 4 units of 512x512; the job's own width wins over the preset's: 2.
    costs = [response.json()["cost"] for response in (styled, narrow, plain)]
    assert costs == [4, 2, 1]
    stored = kubectl.json("get", "gj", styled.json()["id"], "-n", tenant.namespace)["spec"]
    assert (stored["style"], "width" in stored, "height" in stored) == ("poster", False, False)
