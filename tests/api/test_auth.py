"""Credentials, roles and tenant isolation."""

import time

import pytest

from diffleet_api.tenants import revoke_key
from diffleet_api.tokens import Role
from tests.api.support import Api, ApiTenant, connect, create_tenant, model_cache, token
from tests.api.test_jobs import SPEC
from tests.conftest import delete_namespace
from tests.support.stack import Kubectl


def test_missing_credentials_get_401_with_a_challenge(api: Api) -> None:
    response = api.client().get("/v1/jobs")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


def test_valid_jwt_is_accepted(api: Api, tenant: ApiTenant) -> None:
    with api.client(token(tenant.id)) as http:
        assert http.get("/v1/jobs").status_code == 200
        assert http.post("/v1/jobs", json=SPEC).status_code == 201


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://elsewhere"}, "issuer"),
        ({"secret": "not-the-secret-of-this-platform-at-all"}, "invalid"),
        ({"role": "owner"}, "role"),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "wrong-signature", "unknown-role"],
)
def test_bad_jwts_are_refused(
    api: Api, tenant: ApiTenant, claims: dict[str, object], reason: str
) -> None:
    with api.client(token(tenant.id, **claims)) as http:  # type: ignore[arg-type]
        response = http.get("/v1/jobs")
    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_tampered_jwt_is_refused(api: Api, tenant: ApiTenant) -> None:
    header, _, signature = token(tenant.id, role="viewer").split(".")
    admin = token(tenant.id, role="admin").split(".")[1]
    with api.client(f"{header}.{admin}.{signature}") as http:
        assert http.get("/v1/jobs").status_code == 401


def test_revoked_key_is_refused(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.member) as http:
        assert http.get("/v1/jobs").status_code == 200
        with connect() as connection:
            assert revoke_key(connection, tenant.key_ids[Role.MEMBER])
        refused = http.get("/v1/jobs")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_other_tenant_gets_404_on_every_route_of_a_job(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    other_namespace = f"{tenant.namespace}-b"
    kubectl.run("create", "namespace", other_namespace)
    try:
        model_cache(kubectl, other_namespace, "sd15-test")
        other = create_tenant(other_namespace)
        with api.client(tenant.member) as owner:
            job = owner.post("/v1/jobs", json=SPEC).json()["id"]
        with api.client(other.keys[Role.ADMIN]) as intruder:
            for method, path in [
                ("GET", f"/v1/jobs/{job}"),
                ("DELETE", f"/v1/jobs/{job}"),
                ("GET", f"/v1/jobs/{job}/events"),
                ("GET", f"/v1/jobs/{job}/outputs"),
            ]:
                response = intruder.request(method, path)
                assert response.status_code == 404, (method, path, response.text)
            assert intruder.get("/v1/jobs").json()["items"] == []
        spec = kubectl.json("get", "gj", job, "-n", tenant.namespace)["spec"]
        assert spec["cancel"] is False
    finally:
        delete_namespace(kubectl, other_namespace)
