"""`diffleet-admin purge-tenant` against the stack's MinIO and PostgreSQL: a tenant's
outputs and uploads go, and with --history its job history; a neighbouring namespace
whose name it prefixes keeps everything; a second run removes nothing."""

import uuid
from collections.abc import Iterator

import boto3
import pytest
from psycopg.types.json import Jsonb

from diffleet_api import admin
from diffleet_core.settings import Buckets
from diffleet_core.storage import output_key, tenant_prefix
from tests.api.support import connect

BUCKETS = Buckets()


def run_admin(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = admin.parser().parse_args(argv)
    status: int = args.run(args)
    printed = capsys.readouterr()
    return status, printed.out + printed.err


def store(namespace: str) -> None:
    """Two outputs, an upload and a history row with a webhook delivery for `namespace`."""
    s3 = boto3.client("s3")
    uid = str(uuid.uuid4())
    for index in range(2):
        key = output_key(namespace, "job", uid, index, "png")
        s3.put_object(Bucket=BUCKETS.outputs, Key=key, Body=b"png")
    s3.put_object(Bucket=BUCKETS.uploads, Key=f"{tenant_prefix(namespace)}up.png", Body=b"png")
    with connect() as connection:
        connection.execute(
            "insert into jobs (uid, namespace, name, spec, created_at)"
            " values (%s, %s, 'job', %s, now())",
            (uid, namespace, Jsonb({"prompt": "a red circle"})),
        )
        connection.execute(
            "insert into webhook_deliveries (job_uid, url, payload) values (%s, %s, %s)",
            (uid, "http://example.invalid/hook", Jsonb({})),
        )


def stored(namespace: str) -> tuple[int, int, int]:
    """(outputs, uploads, history rows) the namespace has."""
    s3 = boto3.client("s3")
    counts = [
        s3.list_objects_v2(Bucket=bucket, Prefix=tenant_prefix(namespace))["KeyCount"]
        for bucket in (BUCKETS.outputs, BUCKETS.uploads)
    ]
    with connect() as connection:
        row = connection.execute(
            "select count(*) from jobs where namespace = %s", (namespace,)
        ).fetchone()
    return counts[0], counts[1], row[0] if row else 0


@pytest.fixture
def tenant_namespace(local_stack: dict[str, str]) -> Iterator[str]:
    name = f"purge-{uuid.uuid4().hex[:6]}"
    yield name
    with connect() as connection:
        connection.execute("delete from jobs where namespace like %s", (f"{name}%",))


def test_purge_tenant_removes_its_objects_and_on_request_its_history(
    tenant_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    neighbour = f"{tenant_namespace}-b"
    store(tenant_namespace)
    store(neighbour)

    status, printed = run_admin(capsys, "purge-tenant", tenant_namespace)
    assert status == 0, printed
    assert f"s3://{BUCKETS.outputs}/{tenant_namespace}/: 2 objects removed" in printed
    assert f"s3://{BUCKETS.uploads}/{tenant_namespace}/: 1 objects removed" in printed
    assert stored(tenant_namespace) == (0, 0, 1)

    status, printed = run_admin(capsys, "purge-tenant", tenant_namespace, "--history")
    assert status == 0, printed
    assert f"s3://{BUCKETS.outputs}/{tenant_namespace}/: 0 objects removed" in printed
    assert "history: 1 jobs and 1 webhook deliveries removed" in printed
    assert stored(tenant_namespace) == (0, 0, 0)
    assert stored(neighbour) == (2, 1, 1)

    status, printed = run_admin(capsys, "purge-tenant", tenant_namespace, "--history")
    assert status == 0, printed
    assert "history: 0 jobs and 0 webhook deliveries removed" in printed

    run_admin(capsys, "purge-tenant", neighbour, "--history")
    assert stored(neighbour) == (0, 0, 0)


def test_purge_tenant_refuses_what_is_not_a_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    status, printed = run_admin(capsys, "purge-tenant", "../diffleet-system")
    assert status == 2
    assert "not a namespace name" in printed
