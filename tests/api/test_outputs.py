"""GET /v1/jobs/{id}/outputs for an output format other than PNG: the key's extension
is the format's, and each output says its format."""

import uuid

import boto3
from psycopg.types.json import Jsonb

from diffleet_core.storage import output_key
from tests.api.support import Api, ApiTenant, connect
from tests.api.test_jobs import SPEC


def test_jpeg_and_webp_outputs_are_signed_with_their_format(api: Api, tenant: ApiTenant) -> None:
    name, uid = f"done-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    outputs = []
    for index, (image_format, extension) in enumerate([("jpeg", "jpg"), ("webp", "webp")]):
        key = output_key(tenant.namespace, name, uid, index, extension)
        boto3.client("s3").put_object(Bucket="diffleet-outputs", Key=key, Body=extension.encode())
        outputs.append(
            {"uri": f"s3://diffleet-outputs/{key}", "format": image_format,
             "sha256": "0" * 64, "width": 64, "height": 64}
        )  # fmt: skip
    spec = SPEC | {"output": {"format": "jpeg", "quality": 80}}
    status = {"phase": "Succeeded", "outputs": outputs}
    with connect() as connection:  # a finished job, read from its history
        connection.execute(
            "insert into jobs (uid, tenant_id, namespace, name, spec, status, phase, cost,"
            " created_at) values (%s, %s, %s, %s, %s, %s, 'Succeeded', 1, now())",
            (uid, tenant.id, tenant.namespace, name, Jsonb(spec), Jsonb(status)),
        )  # fmt: skip
    with api.client(tenant.member) as http:
        response = http.get(f"/v1/jobs/{name}/outputs")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["format"] for item in items] == ["jpeg", "webp"]
    assert [item["url"].split("?")[0].rsplit("/", 1)[1] for item in items] == ["0.jpg", "1.webp"]
