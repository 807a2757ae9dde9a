"""The generation features at the REST door: every spec kubectl refuses
(tests/support/generation_specs.py) is a 422 naming the same field, alone and in a
batch, and an accepted spec of each feature costs what diffleet_core.pricing says,
before it runs. A ModelCache of a newer type that breaks a rule is refused alike."""

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from diffleet_core.pricing import job_cost
from diffleet_core.resources.generation_job import GenerationJobSpec, Mode, Tier
from diffleet_core.resources.model_cache import BaseModelFamily
from tests.api.support import Api, ApiTenant, create_tenant, model_cache
from tests.conftest import delete_namespace
from tests.support.generation_specs import (
    ACCEPTED,
    BACKGROUND_REMOVER,
    CHECKPOINT,
    CONTROLNET,
    DEPTH_CONTROLNET,
    EMBEDDING,
    IMAGE_ENCODER,
    IP_ADAPTER,
    MOTION_ADAPTER,
    REFUSED,
    REFUSED_CACHES,
    RESTORER,
    SVD,
    T2I_ADAPTER,
    UPSCALER,
    VAE,
    Accepted,
    Refused,
    RefusedCache,
    resolved,
)
from tests.support.stack import Kubectl


@pytest.fixture(scope="module")
def owner(api: Api, kubectl: Kubectl) -> Iterator[ApiTenant]:
    """An enterprise tenant (its rate limits allow every case) whose namespace holds a
    ModelCache of each type the specs name."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", namespace)
    model_cache(kubectl, namespace, CHECKPOINT)
    model_cache(kubectl, namespace, UPSCALER, None, model_type="upscaler")
    model_cache(kubectl, namespace, RESTORER, None, model_type="restorer")
    model_cache(kubectl, namespace, EMBEDDING, model_type="embedding")
    model_cache(kubectl, namespace, VAE, model_type="vae")
    model_cache(kubectl, namespace, CONTROLNET, model_type="controlnet", controlType="canny")
    model_cache(kubectl, namespace, DEPTH_CONTROLNET, model_type="controlnet", controlType="depth")
    model_cache(
        kubectl, namespace, T2I_ADAPTER, model_type="t2i-adapter", controlType="canny",
        format="diffusers",
    )  # fmt: skip
    model_cache(kubectl, namespace, IP_ADAPTER, model_type="ip-adapter", imageEncoder=IMAGE_ENCODER)
    folder = {"format": "diffusers"}
    model_cache(kubectl, namespace, IMAGE_ENCODER, None, model_type="image-encoder", **folder)
    model_cache(kubectl, namespace, MOTION_ADAPTER, model_type="motion-adapter", **folder)
    model_cache(
        kubectl, namespace, BACKGROUND_REMOVER, None, model_type="background-remover", **folder
    )
    model_cache(kubectl, namespace, SVD, "svd", **folder)
    yield create_tenant(namespace, Tier.ENTERPRISE)
    delete_namespace(kubectl, namespace)


@pytest.mark.parametrize("case", REFUSED, ids=[case.id for case in REFUSED])
def test_bad_generation_feature_is_422_naming_the_field(
    api: Api, owner: ApiTenant, case: Refused
) -> None:
    with api.client(owner.member) as http:
        response = http.post("/v1/jobs", json=resolved(case.spec, owner.namespace))
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert (case.field, case.rule) in {(error["field"], error["rule"]) for error in errors}
    if case.message is not None:
        assert {"field": case.field, "rule": case.rule, "message": case.message} in errors


def test_a_batch_of_bad_generation_features_names_each_job_and_field(
    api: Api, owner: ApiTenant
) -> None:
    jobs = [resolved(case.spec, owner.namespace) for case in REFUSED]
    with api.client(owner.member) as http:
        response = http.post("/v1/jobs:batch", json={"jobs": jobs})
    assert response.status_code == 422, response.text
    named = {(error["field"], error["rule"]) for error in response.json()["errors"]}
    missing = [
        case.id
        for index, case in enumerate(REFUSED)
        if (f"jobs[{index}].{case.field}", case.rule) not in named
    ]
    assert missing == []


@pytest.mark.parametrize("case", REFUSED_CACHES, ids=[case.id for case in REFUSED_CACHES])
def test_bad_model_of_a_new_type_is_422_naming_the_field(
    api: Api, owner: ApiTenant, case: RefusedCache
) -> None:
    body = {"name": case.id} | resolved(case.spec, owner.namespace)
    with api.client(owner.member) as http:
        response = http.post("/v1/models", json=body)
    assert response.status_code == 422, response.text
    assert {
        "field": case.field,
        "rule": "x-kubernetes-validations",
        "message": case.message,
    } in response.json()["errors"]


@pytest.mark.parametrize("case", ACCEPTED, ids=[case.id for case in ACCEPTED])
def test_generation_feature_is_accepted_at_its_price(
    api: Api, owner: ApiTenant, case: Accepted
) -> None:
    with api.client(owner.member) as http:
        response = http.post(
            "/v1/jobs", params={"name": case.id}, json=resolved(case.spec, owner.namespace)
        )
    assert response.status_code == 201, response.text
    assert Decimal(str(response.json()["cost"])) == case.cost


@pytest.mark.parametrize("case", ACCEPTED, ids=[case.id for case in ACCEPTED])
def test_the_prices_worked_out_by_hand_are_core_pricing(case: Accepted) -> None:
    spec = GenerationJobSpec.model_validate(resolved(case.spec, "tenant"))
    family = None if spec.mode is Mode.UPSCALE else BaseModelFamily(case.family)
    assert job_cost(spec, family) == case.cost
