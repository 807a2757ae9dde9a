"""Credits: reserved on submit, settled on success, refunded on failure, cancel or
deletion; 402 when short; the ledger always sums to the balance. The job watcher is
what settles: here the test writes the terminal status, as the operator would."""

import asyncio
import json
import os
import random
from decimal import Decimal
from typing import Any

from kubernetes_asyncio import client, config

from diffleet_api.kube import API, CREATED_BY
from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources.generation_job import Tier
from tests.api.support import (
    Api,
    ApiTenant,
    connect,
    create_tenant,
    delete_jobs,
    model_cache,
    spawn_api,
)
from tests.api.test_jobs import SPEC
from tests.support.platform import apply_job
from tests.support.polling import eventually
from tests.support.stack import Kubectl


def balance_and_ledger(tenant_id: str) -> tuple[Decimal, Decimal]:
    with connect() as connection:
        row = connection.execute(
            "select t.balance, coalesce(sum(l.amount), 0) from tenants t"
            " left join ledger l on l.tenant_id = t.id where t.id = %s group by t.balance",
            (tenant_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


async def set_phases(namespace: str, phases: dict[str, str]) -> None:
    """Writes each job's terminal status, as the operator would."""
    await config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        gate = asyncio.Semaphore(16)

        async def patch(name: str, phase: str) -> Any:
            async with gate:
                return await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                    API_GROUP, API_VERSION, namespace, "generationjobs", name,
                    {"status": {"phase": phase}},
                    _content_type="application/merge-patch+json", _request_timeout=20,
                )  # fmt: skip

        await asyncio.gather(*(patch(name, phase) for name, phase in phases.items()))


def test_insufficient_balance_is_402_and_nothing_is_created(
    api: Api, namespace: str, kubectl: Kubectl
) -> None:
    model_cache(kubectl, namespace, "sdxl-test", "sdxl")
    tenant = create_tenant(namespace, credits="7")
    with api.client(tenant.member) as http:
        first = http.post("/v1/jobs", json=SPEC | {"model": "sdxl-test", "width": 1024})
        assert first.status_code == 201
        assert first.json()["cost"] == 4
        refused = http.post("/v1/jobs", json=SPEC | {"model": "sdxl-test", "width": 1024})
        assert refused.status_code == 402
        assert refused.headers["content-type"] == "application/problem+json"
        assert "balance is 3" in refused.json()["detail"]
        usage = http.get("/v1/usage").json()
    assert usage["balance"] == 3
    assert usage["reserved"] == 4
    assert len(kubectl.run("get", "gj", "-n", namespace, "-o", "name").stdout.split()) == 1


def test_reserve_settle_refund_and_the_ledger_balances_after_200_jobs(
    platform_api: Api, namespace: str, kubectl: Kubectl
) -> None:
    model_cache(kubectl, namespace, "sd15-test", "sd15")
    model_cache(kubectl, namespace, "sdxl-test", "sdxl")
    model_cache(kubectl, namespace, "ink", "sd15", model_type="lora")
    tenant = create_tenant(namespace, Tier.ENTERPRISE, credits="5000")
    pick = random.Random(5)  # noqa: S311 - a reproducible mix, not a secret
    specs = []
    for _ in range(200):
        spec: dict[str, Any] = SPEC | {
            "model": pick.choice(["sd15-test", "sdxl-test"]),
            "width": pick.choice([512, 768, 1024]),
            "batchSize": pick.randint(1, 3),
        }
        if spec["model"] == "sd15-test" and pick.random() < 0.3:  # an sd15 LoRA
            spec["loras"] = [{"model": "ink", "weight": 0.5}]
        specs.append(spec)
    with platform_api.client(tenant.member) as http:
        created = []
        for start in range(0, 200, 50):
            batch = http.post("/v1/jobs:batch", json={"jobs": specs[start : start + 50]})
            assert batch.status_code == 201, batch.text
            created += batch.json()["items"]
        reserved = sum(Decimal(str(job["cost"])) for job in created)
        assert balance_and_ledger(tenant.id) == (5000 - reserved, 5000 - reserved)

        outcomes = {job["id"]: pick.choice(["Succeeded", "Failed", "Cancelled"]) for job in created}
        to_delete = [name for name in list(outcomes)[:10]]
        for name in to_delete:
            del outcomes[name]
        asyncio.run(set_phases(namespace, outcomes))
        delete_jobs(kubectl, namespace, *to_delete)
        refunded = sum(
            Decimal(str(job["cost"]))
            for job in created
            if outcomes.get(job["id"], "Deleted") != "Succeeded"
        )

        def settled() -> dict[str, Any] | None:
            usage = http.get("/v1/usage").json()
            return usage if usage["reserved"] == 0 else None

        usage = eventually(settled, timeout=60, what="every reservation settled or refunded")
    balance, ledger_total = balance_and_ledger(tenant.id)
    assert balance == ledger_total == 5000 - reserved + refunded
    assert Decimal(str(usage["balance"])) == balance
    with connect() as connection:
        kinds = dict(
            connection.execute(
                "select kind, count(*) from ledger where tenant_id = %s group by kind",
                (tenant.id,),
            ).fetchall()
        )
    succeeded = sum(1 for phase in outcomes.values() if phase == "Succeeded")
    assert kinds == {"topup": 1, "reserve": 200, "settle": succeeded, "refund": 200 - succeeded}
    kubectl.run("delete", "gj", "--all", "-n", namespace, "--wait=false")


def test_history_outlives_the_resource(
    platform_api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    with platform_api.client(tenant.member) as http:
        job = http.post("/v1/jobs", json=SPEC).json()
        asyncio.run(set_phases(tenant.namespace, {job["id"]: "Failed"}))

        def recorded() -> bool:
            with connect() as connection:
                row = connection.execute(
                    "select phase from jobs where uid = %s", (job["uid"],)
                ).fetchone()
            return row is not None and row[0] == "Failed"

        eventually(recorded, timeout=30, what="terminal phase in history")
        delete_jobs(kubectl, tenant.namespace, job["id"])
        after = http.get(f"/v1/jobs/{job['id']}")
    assert after.status_code == 200
    assert after.json()["uid"] == job["uid"]
    assert after.json()["status"]["phase"] == "Failed"


def test_a_job_the_api_created_but_never_reserved_is_deleted_by_the_watcher(
    tenant: ApiTenant, kubectl: Kubectl
) -> None:
    """An API replica that dies between the create and the reservation leaves a job no
    client knows of; the leading watcher deletes it once it is older than the grace, and
    leaves reserved jobs and kubectl's jobs alone."""
    [api] = spawn_api(tenant.namespace, abandon_unreserved_after_seconds="2")
    namespace = tenant.namespace
    try:
        with api.client(tenant.member) as http:
            submitted = http.post("/v1/jobs", json=SPEC).json()["id"]
        apply_job(kubectl, namespace, "from-kubectl", model="sd15-test")
        orphan = {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GenerationJob",
            "metadata": {"name": "orphan", "labels": {CREATED_BY: API}},
            "spec": {"model": "sd15-test", "prompt": "nobody pays for this"},
        }
        kubectl.apply(json.dumps(orphan), namespace)

        def deleted() -> bool:
            job = kubectl.json("get", "gj", "orphan", "-n", namespace)
            return "deletionTimestamp" in job["metadata"]

        eventually(deleted, timeout=30, what="the orphan deleted")
        assert api.process.metric("diffleet_api_jobs_abandoned_total") == 1
        jobs = [job["metadata"] for job in kubectl.json("get", "gj", "-n", namespace)["items"]]
        kept = {meta["name"] for meta in jobs if "deletionTimestamp" not in meta}
        assert kept == {submitted, "from-kubectl"}
        with connect() as connection:
            row = connection.execute(
                "select credits, (select count(*) from ledger where job_uid = jobs.uid)"
                " from jobs where namespace = %s and name = 'orphan'",
                (namespace,),
            ).fetchone()
        assert row == ("abandoned", 0)
    finally:
        api.process.stop()
