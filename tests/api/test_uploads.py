"""POST /v1/uploads against the real stack: images stored in S3 without EXIF, hostile
content refused, the URI usable in a job of the same tenant only, uploads rate-limited."""

import io

import boto3
import pytest
from PIL import Image

from diffleet_api.settings import ApiSettings
from diffleet_api.tokens import Role
from diffleet_core.resources.generation_job import Tier
from tests.api.images import EXIF_MARKER, SCRIPT, has_exif, picture, png_bomb
from tests.api.support import Api, ApiTenant, create_tenant

OCTETS = {"Content-Type": "application/octet-stream"}
JOB = {"model": "sd15-test", "prompt": "the same scene at night", "steps": 4}


def stored(uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


@pytest.mark.parametrize(
    ("pillow_format", "extension"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")]
)
def test_an_image_is_stored_under_the_tenant_without_exif(
    api: Api, tenant: ApiTenant, pillow_format: str, extension: str
) -> None:
    original = picture(pillow_format)
    assert has_exif(original)
    with api.client(tenant.member) as http:
        response = http.post("/v1/uploads", content=original, headers=OCTETS)
    assert response.status_code == 201, response.text
    upload = response.json()
    assert upload["uri"].startswith(f"s3://diffleet-uploads/{tenant.namespace}/")
    assert upload["uri"].endswith(f"{upload['sha256']}.{extension}")
    assert (upload["width"], upload["height"]) == (64, 48)
    assert upload["format"] == pillow_format.lower()

    data = stored(upload["uri"])
    assert len(data) == upload["sizeBytes"]
    assert not has_exif(data)
    assert EXIF_MARKER.encode() not in data
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == pillow_format


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"#!/bin/sh\nrm -rf /\n", "image/png", 415),
        (picture("PNG") + SCRIPT, "image/png", 422),
        (png_bomb(100_000, 100_000), "image/png", 413),
        (png_bomb(4097, 4096), "application/octet-stream", 413),
        (b"", "application/octet-stream", 422),
    ],
    ids=["script-named-png", "polyglot", "decompression-bomb", "pixel-limit", "empty"],
)
def test_hostile_or_unsupported_content_is_refused(
    api: Api, tenant: ApiTenant, content: bytes, content_type: str, status: int
) -> None:
    with api.client(tenant.member) as http:
        response = http.post(
            "/v1/uploads",
            content=content,
            headers={"Content-Type": content_type, "Content-Disposition": "file; name=a.png"},
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_too_many_bytes_are_refused(api: Api, tenant: ApiTenant) -> None:
    limit = ApiSettings().upload_max_bytes
    with api.client(tenant.member) as http:
        response = http.post("/v1/uploads", content=b"\x89PNG" + b"\0" * limit, headers=OCTETS)
    assert response.status_code == 413
    assert str(limit) in response.json()["detail"]


def test_a_viewer_cannot_upload(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.keys[Role.VIEWER]) as http:
        response = http.post("/v1/uploads", content=picture("PNG"), headers=OCTETS)
    assert response.status_code == 403


def test_an_upload_is_usable_by_its_tenant_only(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.member) as http:
        uri = http.post("/v1/uploads", content=picture("PNG"), headers=OCTETS).json()["uri"]
        own = http.post("/v1/jobs", json=JOB | {"mode": "img2img", "initImage": uri})
        assert own.status_code == 201, own.text

    other = create_tenant(f"{tenant.namespace}-b")
    with api.client(other.member) as http:
        stolen = http.post(
            "/v1/jobs:batch", json={"jobs": [JOB, JOB | {"mode": "img2img", "initImage": uri}]}
        )
        elsewhere = http.post(
            "/v1/jobs",
            json=JOB | {"controlNet": {"model": "cn", "image": "s3://diffleet-models/x.png"}},
        )
        entries = http.post(
            "/v1/jobs",
            json=JOB
            | {
                "controlNets": [
                    {"model": "cn", "image": f"s3://diffleet-uploads/{other.namespace}/a.png"},
                    {"model": "cn", "image": uri},
                ],
                "ipAdapters": [{"model": "ip", "image": uri}],
            },
        )
    assert stolen.status_code == 422
    assert [(e["field"], e["rule"]) for e in stolen.json()["errors"]] == [
        ("jobs[1].initImage", "tenantScope")
    ]
    assert elsewhere.status_code == 422
    assert elsewhere.json()["errors"][0]["field"] == "controlNet.image"
    assert entries.status_code == 422
    scoped = [e["field"] for e in entries.json()["errors"] if e["rule"] == "tenantScope"]
    assert scoped == ["controlNets[1].image", "ipAdapters[0].image"]


def test_uploads_per_hour_follow_the_tier(api: Api, namespace: str) -> None:
    tenant = create_tenant(namespace)
    allowed = ApiSettings().tier_limits[Tier.FREE].uploads_per_hour
    assert allowed == 20
    image = picture("PNG", (8, 8))
    with api.client(tenant.member) as http:
        for _ in range(allowed):
            assert http.post("/v1/uploads", content=image, headers=OCTETS).status_code == 201
        refused = http.post("/v1/uploads", content=image, headers=OCTETS)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "uploads" in refused.headers["ratelimit-policy"]
