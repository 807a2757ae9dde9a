"""The API routes a console needs: a job's and a training's quote, queued jobs'
positions, the fleet (with the autoscaler's decisions) for the platform role, deleting a
job's outputs and the before/after source of its outputs, usage's rate-limit state."""

import io
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import pytest
from PIL import Image
from psycopg.types.json import Jsonb

from diffleet_api.tokens import Role
from diffleet_core.resources.generation_job import Tier
from diffleet_core.resources.gpu_pool import FLEET_LABEL
from diffleet_core.storage import output_key
from tests.api import support
from tests.api.support import (
    Api,
    ApiTenant,
    connect,
    create_tenant,
    model_cache,
    sse_events,
    token,
)
from tests.api.test_jobs import SPEC
from tests.api.test_trainings import spec as training_spec
from tests.api.test_trainings import upload
from tests.operator.injection import idle_worker_lease
from tests.support.pictures import png_bytes
from tests.support.polling import eventually
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


def queue(kubectl: Kubectl, namespace: str, name: str, queued_at: datetime) -> None:
    """Writes the job's status Queued (tier free), as the operator's admission would."""
    status = {
        "phase": "Queued",
        "tier": "free",
        "queue": "free",
        "queuedAt": queued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    kubectl.run(
        "patch", "gj", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_queued_jobs_show_their_queue_position_in_order_and_others_none(
    platform_api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    # A moment long past, random: only these jobs stand between the first and the last
    # (the history may hold Queued rows of earlier runs, all ahead or all behind).
    moment = datetime(1990, 1, 1, tzinfo=UTC) + timedelta(seconds=secrets.randbelow(10**9))
    with platform_api.client(tenant.member) as http:
        names = [http.post("/v1/jobs", json=SPEC).json()["id"] for _ in range(4)]
        for index, name in enumerate(names[:3]):
            queue(kubectl, tenant.namespace, name, moment + timedelta(seconds=index))

        def positions() -> list[int | None] | None:
            shown = [http.get(f"/v1/jobs/{name}").json()["queuePosition"] for name in names]
            return shown if None not in shown[:3] else None

        first, second, third, pending = eventually(
            positions, timeout=30, what="the watcher records the queued jobs"
        )
        listed = http.get("/v1/jobs", params={"limit": 500}).json()["items"]
        with http.stream("GET", f"/v1/jobs/{names[1]}/events") as stream:
            _, event, data = next(sse_events(stream.iter_lines()))
    assert (event, data["position"]) == ("queued", second)
    assert first is not None
    assert first >= 1
    assert (second, third, pending) == (first + 1, first + 2, None)
    by_name = {job["id"]: job["queuePosition"] for job in listed}
    assert [by_name[name] for name in names] == [first, second, third, None]


@pytest.fixture
def platform_key(local_stack: dict[str, str]) -> Iterator[str]:
    with support.platform_key("test-platform") as key:
        yield key


@pytest.fixture
def fleet_pool(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A GPUPool of the test's fleet (no operator serves it) whose status says what an
    autoscaler decided, and an idle worker's Lease in the fleet namespace."""
    name = f"p{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": name, "labels": {FLEET_LABEL: namespace}},
        "spec": {"gpuType": name, "vramGiB": 16, "maxReplicas": 4, "tiers": ["free"]},
    }
    kubectl.apply(json.dumps(body))
    status = {"replicas": 1, "readyReplicas": 1, "busyReplicas": 0, "desiredReplicas": 2,
              "queuedJobs": 3, "lastScaleTime": "2026-01-02T03:04:05Z"}  # fmt: skip
    kubectl.run(
        "patch", "gpupool", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    idle_worker_lease(kubectl, namespace, "fleet-worker-0")
    pool_event(kubectl, name, "ScaledUp", "desired replicas 0 -> 2", "2026-01-02T03:04:05Z")
    pool_event(kubectl, name, "ScaledDown", "desired replicas 2 -> 1", "2026-01-02T03:09:05Z")
    pool_event(kubectl, name, "WorkerDrained", "not a decision", "2026-01-02T03:10:05Z")
    yield name
    kubectl.run("delete", "gpupool", name, "--wait=false", check=False)


def pool_event(kubectl: Kubectl, pool: str, reason: str, message: str, at: str) -> None:
    """An Event about the pool where the operator posts them (a cluster-scoped object's
    go to `default`)."""
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{pool}.", "namespace": "default"},
        "involvedObject": {"apiVersion": "diffleet.io/v1alpha1", "kind": "GPUPool", "name": pool},
        "reason": reason, "message": message, "type": "Normal",
        "firstTimestamp": at, "lastTimestamp": at, "count": 1,
        "source": {"component": "diffleet-operator"},
    }  # fmt: skip
    kubectl.run("create", "-f", "-", stdin=json.dumps(event))


def test_the_fleet_shows_pools_workers_and_queues_to_the_platform_role(
    api: Api, namespace: str, fleet_pool: str, platform_key: str
) -> None:
    with api.client(platform_key) as http:
        answer = http.get("/v1/fleet")
    assert answer.status_code == 200, answer.text
    fleet = answer.json()
    [pool] = [found for found in fleet["pools"] if found["name"] == fleet_pool]
    assert pool["fleetNamespace"] == namespace
    assert pool["spec"]["tiers"] == ["free"]
    assert pool["status"] == pool["status"] | {
        "replicas": 1, "readyReplicas": 1, "busyReplicas": 0, "desiredReplicas": 2,
        "queuedJobs": 3, "lastScaleTime": "2026-01-02T03:04:05Z",
    }  # fmt: skip
    [worker] = [found for found in fleet["workers"] if found["namespace"] == namespace]
    assert worker["id"] == "fleet-worker-0"
    assert worker["inventory"] == worker["inventory"] | {
        "workerId": "fleet-worker-0", "pool": "t4", "vramGiB": 16, "concurrency": 1,
        "jobsInFlight": [], "hotModels": [], "draining": False,
    }  # fmt: skip
    assert worker["load"] == 0
    assert worker["expiresAt"] > worker["renewedAt"]
    assert all({"id", "type", "status"} <= model.keys() for model in fleet["models"])
    assert all(count > 0 for count in fleet["queued"].values())
    decisions = [d for d in fleet["decisions"] if d["pool"] == fleet_pool]
    assert [(d["reason"], d["message"], d["at"]) for d in decisions] == [
        ("ScaledDown", "desired replicas 2 -> 1", "2026-01-02T03:09:05Z"),
        ("ScaledUp", "desired replicas 0 -> 2", "2026-01-02T03:04:05Z"),
    ]


def test_the_fleet_is_refused_to_every_tenant_credential_and_a_platform_key_reads_no_tenant(
    api: Api, tenant: ApiTenant, platform_key: str
) -> None:
    credentials = [tenant.keys[role] for role in Role] + [token(tenant.id, role="admin")]
    for credential in credentials:
        with api.client(credential) as http:
            refused = http.get("/v1/fleet")
        assert refused.status_code == 403, credential
        assert "platform role" in refused.json()["detail"]
    with api.client() as http:
        assert http.get("/v1/fleet").status_code == 401
    with api.client(platform_key) as http:
        assert http.get("/v1/jobs").status_code == 401
        assert http.get("/v1/usage").status_code == 401


def put_output(namespace: str, name: str, uid: str, index: int) -> str:
    key = output_key(namespace, name, uid, index, "png")
    boto3.client("s3").put_object(Bucket=OUTPUTS, Key=key, Body=b"png")
    return key


def stored(key: str) -> bool:
    listed = boto3.client("s3").list_objects_v2(Bucket=OUTPUTS, Prefix=key)
    return bool(listed.get("Contents"))


OUTPUTS = "diffleet-outputs"


def test_deleting_a_finished_job_s_outputs_removes_its_objects_only_and_is_recorded(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    with api.client(tenant.member) as http:
        job = http.post("/v1/jobs", json=SPEC).json()
        name, uid, namespace = job["id"], job["uid"], tenant.namespace
        unfinished = http.delete(f"/v1/jobs/{name}/outputs")
        mine = [put_output(namespace, name, uid, index) for index in range(2)]
        # The same name's earlier job (another uid) and another job: not this job's keys.
        kept = [put_output(namespace, name, str(uuid.uuid4()), 0),
                put_output(namespace, f"{name}-next", str(uuid.uuid4()), 0)]  # fmt: skip
        outputs = [{"uri": f"s3://{OUTPUTS}/{key}", "format": "png", "sha256": "0" * 64,
                    "width": 64, "height": 64} for key in mine]  # fmt: skip
        kubectl.run(
            "patch", "gj", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Succeeded", "outputs": outputs}}),
        )  # fmt: skip
        assert http.get(f"/v1/jobs/{name}/outputs").status_code == 200
        deleted = http.delete(f"/v1/jobs/{name}/outputs")
        shown = http.get(f"/v1/jobs/{name}").json()
        signed = http.get(f"/v1/jobs/{name}/outputs")
        again = http.delete(f"/v1/jobs/{name}/outputs")
        later = http.get(f"/v1/jobs/{name}").json()
    assert unfinished.status_code == 409
    assert "Pending" in unfinished.json()["detail"]
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert [stored(key) for key in mine + kept] == [False, False, True, True]
    assert shown["outputsDeletedAt"] is not None
    assert shown["status"]["phase"] == "Succeeded"
    assert signed.status_code == 409
    assert "deleted" in signed.json()["detail"]
    assert again.status_code == 204
    assert later["outputsDeletedAt"] == shown["outputsDeletedAt"]


def test_the_outputs_of_a_job_its_ttl_deleted_are_deleted_from_its_history(
    api: Api, tenant: ApiTenant
) -> None:
    name, uid = f"done-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    key = put_output(tenant.namespace, name, uid, 0)
    status = {"phase": "Failed", "reason": "OutOfMemory"}
    with connect() as connection:  # a finished job, only in its history
        connection.execute(
            "insert into jobs (uid, tenant_id, namespace, name, spec, status, phase, cost,"
            " created_at) values (%s, %s, %s, %s, %s, %s, 'Failed', 1, now())",
            (uid, tenant.id, tenant.namespace, name, Jsonb(SPEC), Jsonb(status)),
        )  # fmt: skip
    with api.client(tenant.member) as http:
        deleted = http.delete(f"/v1/jobs/{name}/outputs")
        shown = http.get(f"/v1/jobs/{name}").json()
    assert deleted.status_code == 204
    assert not stored(key)
    assert shown["outputsDeletedAt"] is not None


def test_another_tenant_s_job_outputs_are_404_and_a_viewer_may_not_delete(
    api: Api, tenant: ApiTenant
) -> None:
    other = create_tenant(f"{tenant.namespace}-other")
    with api.client(tenant.member) as http:
        name = http.post("/v1/jobs", json=SPEC).json()["id"]
    with api.client(other.member) as http:
        foreign = http.delete(f"/v1/jobs/{name}/outputs")
    with api.client(tenant.keys[Role.VIEWER]) as http:
        viewer = http.delete(f"/v1/jobs/{name}/outputs")
    assert foreign.status_code == 404
    assert viewer.status_code == 403


def test_a_training_quote_is_what_its_submission_reserves_and_refuses_as_it_does(
    api: Api, namespace: str, kubectl: Kubectl
) -> None:
    model_cache(kubectl, namespace, "sd15-test", "sd15")
    trainer = create_tenant(namespace, Tier.STANDARD)
    free = create_tenant(f"{namespace}-free")
    with api.client(trainer.member) as http:
        dataset = upload(http, "quoted")
        body = training_spec(dataset)
        quote = http.post("/v1/trainings:quote", json=body)
        assert kubectl.run("get", "trainingjob", "-n", namespace, "-o", "name").stdout == ""
        training = http.post("/v1/trainings", json=body).json()
        unknown = http.post("/v1/trainings:quote", json=body | {"baseModel": "no-such-model"})
    with api.client(free.member) as http:
        refused = http.post("/v1/trainings:quote", json=body)
    assert quote.status_code == 200, quote.text
    assert quote.json() == {"cost": training["cost"], "breakdown": {"training": training["cost"]},
                            "balance": 1000, "affordable": True}  # fmt: skip
    assert unknown.status_code == 422
    assert [error["field"] for error in unknown.json()["errors"]] == ["baseModel"]
    assert refused.status_code == 403


def test_a_job_s_outputs_carry_its_init_image_for_a_before_after_view(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    before = png_bytes(Image.new("RGB", (64, 64), "green"))
    with api.client(tenant.member) as http:
        init = http.post("/v1/uploads", content=before).json()["uri"]
        edit = http.post("/v1/jobs", json=SPEC | {"mode": "img2img", "initImage": init}).json()
        plain = http.post("/v1/jobs", json=SPEC).json()
        for job in (edit, plain):
            key = put_output(tenant.namespace, job["id"], job["uid"], 0)
            output = {"uri": f"s3://{OUTPUTS}/{key}", "format": "png", "sha256": "0" * 64,
                      "width": 64, "height": 64}  # fmt: skip
            kubectl.run(
                "patch", "gj", job["id"], "-n", tenant.namespace, "--subresource=status",
                "--type=merge", "-p",
                json.dumps({"status": {"phase": "Succeeded", "outputs": [output]}}),
            )  # fmt: skip
        edited = http.get(f"/v1/jobs/{edit['id']}/outputs").json()
        generated = http.get(f"/v1/jobs/{plain['id']}/outputs").json()
    source = httpx.get(edited["sourceUrl"], timeout=10)
    assert source.status_code == 200
    assert Image.open(io.BytesIO(source.content)).getpixel((32, 32)) == (0, 128, 0)
    assert generated["sourceUrl"] is None


def test_usage_shows_each_rate_limit_s_allowance_and_what_is_left(
    api: Api, tenant: ApiTenant
) -> None:
    with api.client(tenant.member) as http:
        first = http.get("/v1/usage").json()["rateLimits"]
        http.post("/v1/uploads", content=png_bytes(Image.new("RGB", (8, 8), "red")))
        http.post("/v1/jobs", json=SPEC)
        second = http.get("/v1/usage").json()["rateLimits"]
    # The free tier's allowances (ApiSettings.tier_limits' defaults).
    limits = {"requests": (100, 60.0), "generations": (10, 3600.0), "uploads": (20, 3600.0)}
    assert {b["name"]: (b["limit"], b["windowSeconds"]) for b in first} == limits
    left = {b["name"]: b["remaining"] for b in first}
    assert left["generations"] == 10
    assert left["uploads"] == 20
    assert left["requests"] <= 99  # this request took its token before answering
    after = {b["name"]: b["remaining"] for b in second}
    assert (after["generations"], after["uploads"]) == (9, 19)
    assert after["requests"] <= left["requests"] - 3
