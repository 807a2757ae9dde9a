"""Submitting, reading, listing and cancelling jobs through the API; the same resources
kubectl sees."""

from diffleet_api.tokens import Role
from diffleet_core.resources.generation_job import Tier
from tests.api.support import Api, ApiTenant, create_tenant, model_cache
from tests.support.stack import Kubectl

SPEC = {"model": "sd15-test", "prompt": "a lighthouse at dusk", "steps": 4}


def test_submitted_job_is_a_generation_job_in_the_tenant_namespace(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    with api.client(tenant.member) as http:
        created = http.post("/v1/jobs", json=SPEC | {"width": 1024, "height": 1024})
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["id"].startswith("gj-")
        assert created.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["namespace"] == tenant.namespace
        assert job["spec"]["width"] == 1024
        assert job["spec"]["guidanceScale"] == 7.0
        assert job["cost"] == 4
        assert {"uid", "status", "createdAt"} <= job.keys()

        fetched = http.get(f"/v1/jobs/{job['id']}")
        assert fetched.status_code == 200
        assert fetched.json()["uid"] == job["uid"]

    resource = kubectl.json("get", "gj", job["id"], "-n", tenant.namespace)
    assert resource["metadata"]["uid"] == job["uid"]
    assert resource["spec"]["prompt"] == SPEC["prompt"]


def test_named_job_list_filter_and_pagination(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.member) as http:
        for index in range(3):
            response = http.post(f"/v1/jobs?name=named-{index}", json=SPEC)
            assert response.status_code == 201, response.text
        http.post("/v1/jobs?name=other-model", json=SPEC | {"model": "sdxl-test"})
        again = http.post("/v1/jobs?name=named-0", json=SPEC)
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 2, "model": "sd15-test"}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/v1/jobs", params=params).json()
            seen += [job["id"] for job in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert sorted(seen) == ["named-0", "named-1", "named-2"]
        assert http.get("/v1/jobs", params={"phase": "Succeeded"}).json()["items"] == []


def test_validation_errors_name_the_field_and_the_crd_rule(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.member) as http:
        response = http.post(
            "/v1/jobs", json=SPEC | {"width": 65, "steps": 0, "maskImage": "s3://b-b/m.png"}
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"].endswith("/validation")
    rules = {(error["field"], error["rule"]) for error in problem["errors"]}
    assert ("width", "multipleOf") in rules
    assert ("steps", "minimum") in rules


def test_cross_field_rule_has_the_crd_message(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.member) as http:
        response = http.post("/v1/jobs", json=SPEC | {"mode": "img2img"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error == {
        "field": "initImage",
        "rule": "x-kubernetes-validations",
        "message": "initImage is required unless mode is txt2img or txt2vid",
    }


def test_unknown_model_is_refused_naming_the_field(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.member) as http:
        response = http.post("/v1/jobs", json=SPEC | {"model": "no-such-model"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "model"


def test_cancel_sets_spec_cancel_and_keeps_the_job(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    with api.client(tenant.member) as http:
        job = http.post("/v1/jobs", json=SPEC).json()
        cancelled = http.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 202
        assert cancelled.json()["spec"]["cancel"] is True
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert kubectl.json("get", "gj", job["id"], "-n", tenant.namespace)["spec"]["cancel"] is True


def test_idempotency_key_replays_the_same_job(api: Api, tenant: ApiTenant) -> None:
    headers = {"Idempotency-Key": "order-42"}
    with api.client(tenant.member) as http:
        first = http.post("/v1/jobs", json=SPEC, headers=headers)
        second = http.post("/v1/jobs", json=SPEC, headers=headers)
        different = http.post("/v1/jobs", json=SPEC | {"steps": 5}, headers=headers)
        listed = http.get("/v1/jobs").json()["items"]
        usage = http.get("/v1/usage").json()
    assert first.status_code == 201
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["uid"] == first.json()["uid"]
    assert different.status_code == 422
    assert len(listed) == 1
    assert [entry["kind"] for entry in usage["ledger"]] == ["reserve", "topup"]


def test_batch_with_one_invalid_item_creates_none(
    api: Api, namespace: str, kubectl: Kubectl
) -> None:
    model_cache(kubectl, namespace, "sd15-test")
    tenant = create_tenant(namespace, Tier.ENTERPRISE)
    jobs = [SPEC | {"seed": index} for index in range(100)]
    jobs[57] = SPEC | {"height": 4096}
    with api.client(tenant.member) as http:
        refused = http.post("/v1/jobs:batch", json={"jobs": jobs})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "jobs[57].height"
        assert kubectl.run("get", "gj", "-n", tenant.namespace, "-o", "name").stdout == ""

        jobs[57] = SPEC
        accepted = http.post("/v1/jobs:batch", json={"jobs": jobs})
        assert accepted.status_code == 201, accepted.text
        assert len(accepted.json()["items"]) == 100
        too_many = http.post("/v1/jobs:batch", json={"jobs": [*jobs, SPEC]})
        assert too_many.status_code == 422
    names = kubectl.run("get", "gj", "-n", tenant.namespace, "-o", "name").stdout.split()
    assert len(names) == 100
    kubectl.run("delete", "gj", "--all", "-n", tenant.namespace, "--wait=false")


def test_viewer_reads_but_cannot_submit(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.keys[Role.VIEWER]) as http:
        refused = http.post("/v1/jobs", json=SPEC)
        assert refused.status_code == 403
        assert http.get("/v1/jobs").status_code == 200
