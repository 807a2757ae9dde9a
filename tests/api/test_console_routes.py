"""The API routes a console needs: a job's quote."""

from diffleet_api.tokens import Role
from tests.api.support import Api, ApiTenant, create_tenant, model_cache
from tests.api.test_jobs import SPEC
from tests.support.stack import Kubectl


def test_a_quote_is_what_a_submission_then_reserves_and_creates_nothing(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    spec = SPEC | {"model": "sdxl-test", "width": 1024, "hiresFix": {"scale": 1.5}}
    with api.client(tenant.member) as http:
        quote = http.post("/v1/jobs:quote", json=spec)
        assert quote.status_code == 200, quote.text
        assert kubectl.run("get", "gj", "-n", tenant.namespace, "-o", "name").stdout == ""
        assert http.get("/v1/usage").json()["reserved"] == 0
        job = http.post("/v1/jobs", json=spec).json()
    body = quote.json()
    assert body["cost"] == job["cost"]
    assert sum(body["breakdown"].values()) == body["cost"]
    assert set(body["breakdown"]) == {"generation", "hiresFix"}
    assert body == body | {"balance": 1000, "affordable": True}


def test_a_quote_beyond_the_balance_answers_not_affordable(
    api: Api, namespace: str, kubectl: Kubectl
) -> None:
    model_cache(kubectl, namespace, "sdxl-test", "sdxl")
    tenant = create_tenant(namespace, credits="3")
    with api.client(tenant.member) as http:
        quote = http.post("/v1/jobs:quote", json=SPEC | {"model": "sdxl-test", "width": 1024})
    assert quote.status_code == 200
    assert quote.json() == {"cost": 4, "breakdown": {"generation": 4}, "balance": 3,
                            "affordable": False}  # fmt: skip


def test_a_quote_refuses_what_a_submission_refuses_naming_the_field(
    api: Api, tenant: ApiTenant
) -> None:
    with api.client(tenant.member) as http:
        bad_size = http.post("/v1/jobs:quote", json=SPEC | {"width": 1001})
        unknown = http.post("/v1/jobs:quote", json=SPEC | {"model": "no-such-model"})
        submitted = http.post("/v1/jobs", json=SPEC | {"model": "no-such-model"})
    with api.client(tenant.keys[Role.VIEWER]) as http:
        viewer = http.post("/v1/jobs:quote", json=SPEC)
    assert bad_size.status_code == 422
    assert [e["field"] for e in bad_size.json()["errors"]] == ["width"]
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == submitted.json()["errors"]
    assert viewer.status_code == 403
