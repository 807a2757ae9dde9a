"""Every model a job names is looked up before the job is created: one that does not
exist, or is not of the type its field asks for, is refused with the field named. An
upscale job names no checkpoint, and is priced by its output pixels only."""

from tests.api.images import picture
from tests.api.support import Api, ApiTenant, model_cache
from tests.api.test_jobs import SPEC
from tests.support.stack import Kubectl


def test_unknown_or_mistyped_models_are_refused_naming_each_field(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    model_cache(kubectl, tenant.namespace, "x4", None, model_type="upscaler")
    spec = SPEC | {
        "embeddings": ["sd15-test", "no-such-embedding"],
        "vae": "no-such-vae",
        "upscale": {"model": "sd15-test"},
        "restoreFaces": {"model": "x4"},
    }
    with api.client(tenant.member) as http:
        response = http.post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    errors = {error["field"]: error for error in response.json()["errors"]}
    assert {field: error["rule"] for field, error in errors.items()} == {
        "embeddings[0]": "modelType",
        "embeddings[1]": "exists",
        "vae": "exists",
        "upscale.model": "modelType",
        "restoreFaces.model": "modelType",
    }
    assert "'no-such-vae'" in errors["vae"]["message"]
    assert "is of type checkpoint, not upscaler" in errors["upscale.model"]["message"]
    assert kubectl.run("get", "gj", "-n", tenant.namespace, "-o", "name").stdout == ""


def test_an_upscale_job_needs_only_its_upscaler_and_costs_its_output_pixels(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    model_cache(kubectl, tenant.namespace, "x4", None, model_type="upscaler")
    with api.client(tenant.member) as http:
        upload = http.post(
            "/v1/uploads",
            content=picture("PNG"),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert upload.status_code == 201, upload.text
        job = {
            "mode": "upscale",
            "initImage": upload.json()["uri"],
            "width": 512,
            "height": 512,
            "upscale": {"model": "x4", "scale": 4.0},
        }
        response = http.post("/v1/jobs", json=job)
    assert response.status_code == 201, response.text
    # 2048x2048 out: 16 units at 0.25 credit, nothing generated.
    assert response.json()["cost"] == 4
