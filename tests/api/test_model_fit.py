"""The REST door refuses what the operator's admission would (diffleet_core.model_rules,
diffleet_core.preprocessors), each a 422 naming the field: a ControlNet of another type
than its entry's, an auto-preprocessed type no preprocessor runs for, a detected type
without a registered detector, IP-Adapters of two image encoders, an svd checkpoint
outside img2vid. Once a detector is registered, the same job is created and priced as
diffleet_core.pricing says. The API's platform namespace is the test's, so that the
detectors of diffleet-system are not found."""

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from diffleet_core.pricing import job_cost
from diffleet_core.resources.generation_job import GenerationJobSpec, Tier
from diffleet_core.resources.model_cache import BaseModelFamily
from tests.api.support import Api, create_tenant, model_cache, spawn_api
from tests.api.test_jobs import SPEC
from tests.support.stack import Kubectl


@pytest.fixture
def own_platform_api(namespace: str) -> Iterator[Api]:
    """An API whose platform namespace is the test's."""
    [started] = spawn_api(namespace, watcher="false", env={"DIFFLEET_SYSTEM_NAMESPACE": namespace})
    yield started
    started.process.stop()


def test_models_that_cannot_run_are_422_naming_the_field_as_admission_would(
    own_platform_api: Api, namespace: str, kubectl: Kubectl
) -> None:
    image = f"s3://diffleet-uploads/{namespace}/in.png"
    model_cache(kubectl, namespace, "sd15-test")
    model_cache(kubectl, namespace, "svd-test", "svd")
    model_cache(kubectl, namespace, "cn-depth", model_type="controlnet", controlType="depth")
    model_cache(kubectl, namespace, "cn-pose", model_type="controlnet", controlType="openpose")
    for adapter, encoder in (("ip-a", "enc-a"), ("ip-b", "enc-b")):
        model_cache(kubectl, namespace, adapter, model_type="ip-adapter", imageEncoder=encoder)
    model_cache(kubectl, namespace, "enc-a", None, model_type="image-encoder", format="diffusers")
    tenant = create_tenant(namespace, Tier.ENTERPRISE)
    depth = {"model": "cn-depth", "image": image}
    jobs: list[dict[str, Any]] = [
        SPEC | {"controlNets": [depth | {"type": "canny", "preprocess": "none"}]},
        SPEC | {"controlNet": {"model": "cn-pose", "image": image}},
        SPEC | {"controlNets": [depth]},
        SPEC
        | {"ipAdapters": [{"model": "ip-a", "image": image}, {"model": "ip-b", "image": image}]},
        SPEC | {"model": "svd-test"},
    ]
    with own_platform_api.client(tenant.member) as http:
        response = http.post("/v1/jobs:batch", json={"jobs": jobs})
        assert response.status_code == 422, response.text
        errors = {error["field"]: error for error in response.json()["errors"]}
        assert {field: error["rule"] for field, error in errors.items()} == {
            "jobs[0].controlNets[0].type": "compatibility",
            "jobs[1].controlNet.preprocess": "preprocessor",
            "jobs[2].controlNets[0].preprocess": "preprocessor",
            "jobs[3].ipAdapters": "compatibility",
            "jobs[4].model": "compatibility",
        }
        # The operator's words (tests/operator/test_generation_models.py).
        assert errors["jobs[0].controlNets[0].type"]["message"] == (
            "controlNets[0].type: cn-depth is a depth ControlNet, not canny"
        )
        assert errors["jobs[3].ipAdapters"]["message"] == (
            "ipAdapters: all of a job's IP-Adapters must share one image encoder (ip-a uses"
            " enc-a, ip-b uses enc-b)"
        )
        assert kubectl.run("get", "gj", "-n", namespace, "-o", "name").stdout == ""

        model_cache(
            kubectl, namespace, "dpt", None, model_type="detector", controlType="depth",
            format="diffusers",
        )  # fmt: skip
        fits = SPEC | {"controlNets": [depth], "ipAdapters": [{"model": "ip-a", "image": image}]}
        created = http.post("/v1/jobs", json=fits)
    assert created.status_code == 201, created.text
    # 1 generated unit, 1 per ControlNet, 0.5 per IP-Adapter.
    expected = job_cost(GenerationJobSpec.model_validate(fits), BaseModelFamily.SD15)
    assert expected == Decimal("2.5")
    assert Decimal(str(created.json()["cost"])) == expected
