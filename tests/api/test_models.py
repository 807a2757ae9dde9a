"""GET/POST /v1/models against the real stack: registering by URI or by upload creates a
ModelCache in the tenant's namespace (which the operator verifies); digests, duplicates,
pickle and broken headers; tenants see the platform's models and their own only."""

import hashlib
import pickle
import struct
import uuid
from collections.abc import Iterator

import boto3
import numpy as np
import pytest
from safetensors.numpy import save

from diffleet_api.tokens import Role
from tests.api.support import Api, ApiTenant, create_tenant, model_cache
from tests.conftest import delete_namespace
from tests.support.platform import Platform
from tests.support.polling import eventually
from tests.support.stack import Kubectl

OCTETS = {"Content-Type": "application/octet-stream"}
SYSTEM = "diffleet-system"


def weights(tag: str) -> bytes:
    """A small safetensors file, unique per tag."""
    return save({"w": np.arange(64, dtype=np.float32)}, metadata={"tag": tag})


@pytest.fixture
def platform_model(kubectl: Kubectl) -> Iterator[str]:
    """A ModelCache of the platform (system namespace), removed afterwards."""
    name = f"platform-{uuid.uuid4().hex[:6]}"
    model_cache(kubectl, SYSTEM, name, "sdxl")
    yield name
    kubectl.run("patch", "mc", name, "-n", SYSTEM, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
    kubectl.run("delete", "mc", name, "-n", SYSTEM, "--wait=false", check=False)


def test_register_from_a_uri_creates_a_model_cache(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    source = f"s3://diffleet-models/{tenant.namespace}/lora/style.safetensors"
    registration = {"name": "my-style", "source": source, "format": "safetensors",
                    "type": "lora", "baseModel": "sd15", "vramGiB": 0.5}  # fmt: skip
    with api.client(tenant.member) as http:
        created = http.post("/v1/models", json=registration)
        assert created.status_code == 201, created.text
        again = http.post("/v1/models", json=registration)
    model = created.json()
    assert (model["id"], model["namespace"], model["platform"]) == (
        "my-style",
        tenant.namespace,
        False,
    )
    resource = kubectl.json("get", "mc", "my-style", "-n", tenant.namespace)
    assert resource["spec"]["source"] == source
    assert resource["spec"]["type"] == "lora"
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("source", "fmt", "rule"),
    [
        ("s3://diffleet-models/someone-else/model.safetensors", "safetensors", "tenantScope"),
        ("s3://diffleet-outputs/{ns}/model.safetensors", "safetensors", "tenantScope"),
        ("s3://diffleet-models/{ns}/model.ckpt", "safetensors", "safetensors"),
        ("s3://diffleet-models/{ns}/pytorch_model.bin", "diffusers", "safetensors"),
    ],
    ids=["other-tenant", "other-bucket", "ckpt", "bin"],
)
def test_register_from_a_uri_is_refused(
    api: Api, tenant: ApiTenant, kubectl: Kubectl, source: str, fmt: str, rule: str
) -> None:
    registration = {"name": "refused", "source": source.format(ns=tenant.namespace),
                    "format": fmt, "baseModel": "sd15"}  # fmt: skip
    with api.client(tenant.member) as http:
        response = http.post("/v1/models", json=registration)
    assert response.status_code == 422, response.text
    assert ("source", rule) in {(e["field"], e["rule"]) for e in response.json()["errors"]}
    listed = kubectl.run("get", "mc", "refused", "-n", tenant.namespace, check=False)
    assert listed.returncode != 0


def test_an_upload_is_hashed_stored_verified_and_its_duplicate_refused(
    api: Api, tenant: ApiTenant, kubectl: Kubectl, platform: Platform
) -> None:
    platform.operator()
    data = weights(tenant.namespace)
    digest = hashlib.sha256(data).hexdigest()
    with api.client(tenant.member) as http:
        created = http.post(
            "/v1/models:upload",
            params={"name": "uploaded", "baseModel": "sdxl", "type": "lora"},
            content=data,
            headers=OCTETS,
        )
        assert created.status_code == 201, created.text
        duplicate = http.post(
            "/v1/models:upload",
            params={"name": "uploaded-again", "baseModel": "sdxl"},
            content=data,
            headers=OCTETS,
        )
    spec = created.json()["spec"]
    assert spec["sha256"] == digest
    assert spec["sizeBytes"] == len(data)
    assert spec["source"].startswith(f"s3://diffleet-models/{tenant.namespace}/uploaded/")
    bucket, _, key = spec["source"].removeprefix("s3://").partition("/")
    assert boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == data

    assert duplicate.status_code == 409
    assert "'uploaded'" in duplicate.json()["detail"]
    gone = kubectl.run("get", "mc", "uploaded-again", "-n", tenant.namespace, check=False)
    assert gone.returncode != 0

    def verified() -> dict[str, object] | None:
        status = kubectl.json("get", "mc", "uploaded", "-n", tenant.namespace).get("status", {})
        return status if status.get("phase") == "Ready" else None

    status = eventually(verified, timeout=60, what="uploaded model Ready")
    assert status["digest"] == digest


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (pickle.dumps({"state_dict": [0.1, 0.2]}), "notPickle"),
        (b"PK\x03\x04" + b"\0" * 128, "notPickle"),
        (struct.pack("<Q", 12) + b"{not json}!!", "safetensors"),
        (weights("truncated")[:-8], "safetensors"),
        (weights("trailing") + b"#!/bin/sh", "safetensors"),
    ],
    ids=["pickle", "torch-zip", "broken-header", "truncated", "trailing-bytes"],
)
def test_an_unsafe_or_broken_upload_is_refused_and_not_kept(
    api: Api, tenant: ApiTenant, kubectl: Kubectl, data: bytes, rule: str
) -> None:
    with api.client(tenant.member) as http:
        response = http.post(
            "/v1/models:upload",
            params={"name": "bad", "baseModel": "sd15"},
            content=data,
            headers=OCTETS,
        )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["rule"] == rule
    assert kubectl.run("get", "mc", "bad", "-n", tenant.namespace, check=False).returncode != 0
    listed = boto3.client("s3").list_objects_v2(
        Bucket="diffleet-models", Prefix=f"{tenant.namespace}/bad/"
    )
    assert listed.get("KeyCount", 0) == 0


def test_an_upscaler_is_uploaded_without_a_base_model_and_refused_with_one(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    with api.client(tenant.member) as http:
        refused = http.post(
            "/v1/models:upload",
            params={"name": "x4", "type": "upscaler", "baseModel": "sd15"},
            content=weights("refused-x4"),
            headers=OCTETS,
        )
        uploaded = http.post(
            "/v1/models:upload",
            params={"name": "x4", "type": "upscaler"},
            content=weights(f"x4-{tenant.namespace}"),
            headers=OCTETS,
        )
    assert refused.status_code == 422, refused.text
    assert [(e["field"], e["rule"]) for e in refused.json()["errors"]] == [
        ("baseModel", "x-kubernetes-validations")
    ]
    assert uploaded.status_code == 201, uploaded.text
    spec = kubectl.json("get", "mc", "x4", "-n", tenant.namespace)["spec"]
    assert spec["type"] == "upscaler"
    assert "baseModel" not in spec


def test_tenants_see_platform_models_and_their_own_only(
    api: Api, tenant: ApiTenant, kubectl: Kubectl, platform_model: str, namespace: str
) -> None:
    other_namespace = f"{namespace}-other"
    kubectl.run("create", "namespace", other_namespace)
    try:
        model_cache(kubectl, other_namespace, "secret-model")
        other = create_tenant(other_namespace)
        with api.client(tenant.keys[Role.VIEWER]) as http:
            mine = http.get("/v1/models").json()["items"]
        with api.client(other.member) as http:
            theirs = http.get("/v1/models").json()["items"]
    finally:
        delete_namespace(kubectl, other_namespace)
    names = {(m["id"], m["platform"]) for m in mine}
    assert {(platform_model, True), ("sd15-test", False), ("sdxl-test", False)} <= names
    assert "secret-model" not in {m["id"] for m in mine}
    assert {m["id"] for m in theirs} >= {platform_model, "secret-model"}
    assert "sd15-test" not in {m["id"] for m in theirs}
