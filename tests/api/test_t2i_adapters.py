"""T2I-Adapters at the REST door: it refuses what admission would (a T2I-Adapter beside a
ControlNet, outside mode txt2img, with a guidance window), each a 422 naming the field
in the operator's words (tests/operator/test_t2i_adapters.py), and creates a job of two
T2I-Adapters at a ControlNet's price each."""

from decimal import Decimal
from typing import Any

from diffleet_core.pricing import job_cost
from diffleet_core.resources.generation_job import GenerationJobSpec, Tier
from diffleet_core.resources.model_cache import BaseModelFamily
from tests.api.support import Api, create_tenant, model_cache
from tests.api.test_jobs import SPEC
from tests.support.stack import Kubectl


def test_adapter_jobs_diffusers_cannot_run_are_422_naming_the_field_and_the_rest_priced(
    api: Api, namespace: str, kubectl: Kubectl
) -> None:
    image = f"s3://diffleet-uploads/{namespace}/in.png"
    model_cache(kubectl, namespace, "sd15-test")
    folder = {"format": "diffusers"}
    model_cache(
        kubectl, namespace, "t2i-canny", model_type="t2i-adapter", controlType="canny", **folder
    )
    model_cache(
        kubectl, namespace, "t2i-depth", model_type="t2i-adapter", controlType="depth", **folder
    )
    model_cache(kubectl, namespace, "cn-canny", model_type="controlnet", controlType="canny")
    tenant = create_tenant(namespace, Tier.ENTERPRISE)
    canny = {"model": "t2i-canny", "image": image}
    jobs: list[dict[str, Any]] = [
        SPEC | {"controlNets": [canny, {"model": "cn-canny", "image": image}]},
        SPEC | {"mode": "img2img", "initImage": image, "controlNets": [canny]},
        SPEC | {"controlNets": [canny | {"guidanceEnd": 0.5}]},
    ]
    with api.client(tenant.member) as http:
        response = http.post("/v1/jobs:batch", json={"jobs": jobs})
        assert response.status_code == 422, response.text
        errors = {error["field"]: error for error in response.json()["errors"]}
        assert {field: error["rule"] for field, error in errors.items()} == {
            "jobs[0].controlNets[1].model": "compatibility",
            "jobs[1].controlNets[0].model": "compatibility",
            "jobs[2].controlNets[0].guidanceEnd": "compatibility",
        }
        assert errors["jobs[0].controlNets[1].model"]["message"] == (
            "controlNets[1].model: cn-canny is a ControlNet and t2i-canny a T2I-Adapter: a"
            " job's entries are all ControlNets or all T2I-Adapters"
        )
        assert errors["jobs[1].controlNets[0].model"]["message"] == (
            "controlNets[0].model: t2i-canny is a T2I-Adapter: T2I-Adapters run only in mode"
            " txt2img"
        )
        assert errors["jobs[2].controlNets[0].guidanceEnd"]["message"] == (
            "controlNets[0].guidanceEnd: t2i-canny is a T2I-Adapter, which steers every step"
            " (guidanceEnd must be 1)"
        )
        assert kubectl.run("get", "gj", "-n", namespace, "-o", "name").stdout == ""

        depth_map = {"model": "t2i-depth", "image": image, "preprocess": "none"}
        fits = SPEC | {"controlNets": [canny, depth_map]}
        created = http.post("/v1/jobs", json=fits)
    assert created.status_code == 201, created.text
    # 1 generated unit, 1 per T2I-Adapter as per ControlNet.
    expected = job_cost(GenerationJobSpec.model_validate(fits), BaseModelFamily.SD15)
    assert expected == Decimal(3)
    assert Decimal(str(created.json()["cost"])) == expected
