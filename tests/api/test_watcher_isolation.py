"""One poisoned record never stops the API's background loops (isolation.py): the job
watcher, settlement, the webhook sender and the abandoned-job sweep each quarantine the
record whose handling raises (its history or delivery row says why, a metric counts it,
once) and go on with the next one; a dependency's failure is not the record's.

The first tests run the real API process against the real stack, with poisoned records
the API server accepts; then unit tests of the same watcher with a real PostgreSQL reach
what the CRD now refuses (a NUL in a prompt, an unknown phase, a spec that is no object)
and what the stack cannot be made to do (a 4xx to a deletion, a dependency's outage)."""

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import psycopg
import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from psycopg.types.json import Jsonb

from diffleet_api import db, tenants
from diffleet_api.history import storable
from diffleet_api.isolation import Loop, dependency_failed
from diffleet_api.metrics import REGISTRY
from diffleet_api.runtime import Runtime
from diffleet_api.settings import ApiSettings
from diffleet_api.watcher import JobWatcher
from diffleet_core.resources.generation_job import Tier
from tests.api.support import Api, ApiTenant, WebhookReceiver, connect
from tests.api.test_jobs import SPEC
from tests.support.polling import eventually
from tests.support.stack import Kubectl

QUARANTINED = "diffleet_api_records_quarantined_total"
# A host the CRD's pattern lets through and httpx parses, but cannot encode when it
# sends: IDNAError (a UnicodeError), no HTTP error.
UNSENDABLE_URL = "http://xn--/hook"
# Year 0 passes the CRD's date-time format; Python's datetime has no year 0.
YEAR_ZERO = "0000-01-01T00:00:00Z"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


def submit(api: Api, tenant: ApiTenant, **spec: Any) -> dict[str, Any]:
    with api.client(tenant.member) as http:
        created = http.post("/v1/jobs", json=SPEC | spec)
    assert created.status_code == 201, created.text
    job: dict[str, Any] = created.json()
    return job


def set_status(kubectl: Kubectl, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Writes the job's status, as the operator would."""
    kubectl.run(
        "patch", "gj", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def history(uid: str) -> tuple[Any, ...] | None:
    """(phase, credits, quarantine_reason, status) of the job's history row."""
    with connect() as connection:
        return connection.execute(
            "select phase, credits, quarantine_reason, status from jobs where uid = %s", (uid,)
        ).fetchone()


def delivery(uid: str) -> tuple[Any, ...] | None:
    """(state, attempts, last_error) of the job's webhook delivery."""
    with connect() as connection:
        return connection.execute(
            "select state, attempts, last_error from webhook_deliveries where job_uid = %s",
            (uid,),
        ).fetchone()


def settled(uid: str, credits: str) -> tuple[Any, ...]:
    """The job's history row once its credits are `credits` (settled or refunded)."""
    return eventually(
        lambda: (row := history(uid)) and row[1] == credits and row,
        timeout=30,
        what=f"job {uid} {credits}",
    )


def delivered_to(receiver: WebhookReceiver, uid: str) -> dict[str, Any]:
    """The payload `receiver` got for job `uid`."""

    def received() -> dict[str, Any] | None:
        payloads = [json.loads(hook.body) for hook in receiver.received]
        return next((body for body in payloads if body["job"]["uid"] == uid), None)

    return eventually(received, timeout=30, what=f"webhook of job {uid} delivered")


# ------------------------------------------------------------ the real process


def test_a_delivery_the_http_client_cannot_send_fails_once_and_the_next_is_delivered(
    platform_api: Api, tenant: ApiTenant, kubectl: Kubectl, receiver: WebhookReceiver
) -> None:
    """A delivery queued before the spec refused its URL (core's model does now)."""
    poisoned = f"poisoned-{uuid.uuid4()}"
    with connect() as connection:
        connection.execute(
            "insert into webhook_deliveries (namespace, job_uid, url, payload)"
            " values (%s, %s, %s, %s)",
            (tenant.namespace, poisoned, UNSENDABLE_URL, Jsonb({"type": "job.finished"})),
        )
    eventually(
        lambda: (row := delivery(poisoned)) and row[0] == "failed" and row,
        timeout=30,
        what="the poisoned delivery failed",
    )
    job = submit(platform_api, tenant, webhookUrl=receiver.url)
    set_status(kubectl, tenant.namespace, job["id"], {"phase": "Succeeded"})

    assert delivered_to(receiver, job["uid"])["phase"] == "Succeeded"
    assert settled(job["uid"], "settled")[0] == "Succeeded"
    state, attempts, error = delivery(poisoned) or ()
    assert (state, attempts) == ("failed", 1)
    assert error.startswith("IDNAError")
    assert platform_api.process.metric(QUARANTINED, loop=Loop.WEBHOOK_SENDER) == 1
    assert "job watcher stopped" not in platform_api.process.tail(400)


def test_a_job_whose_status_the_models_refuse_is_quarantined_yet_settled(
    platform_api: Api, tenant: ApiTenant, kubectl: Kubectl, receiver: WebhookReceiver
) -> None:
    poisoned = submit(platform_api, tenant, webhookUrl=receiver.url)
    following = submit(platform_api, tenant, webhookUrl=receiver.url)
    status = {"phase": "Succeeded", "completedAt": YEAR_ZERO}
    set_status(kubectl, tenant.namespace, poisoned["id"], status)

    phase, _, why, _ = settled(poisoned["uid"], "settled")
    assert phase == "Succeeded"
    assert "completedAt" in why
    state, attempts, error = eventually(
        lambda: delivery(poisoned["uid"]), timeout=10, what="its delivery recorded"
    )
    assert (state, attempts, error) == ("failed", 0, why)

    set_status(kubectl, tenant.namespace, following["id"], {"phase": "Failed"})
    assert settled(following["uid"], "refunded")[2] is None
    assert delivered_to(receiver, following["uid"])["phase"] == "Failed"
    assert [json.loads(hook.body)["job"]["uid"] for hook in receiver.received] == [following["uid"]]
    assert platform_api.process.metric(QUARANTINED, loop=Loop.JOB_WATCHER) == 1


def test_nul_characters_in_a_status_are_stored_escaped_and_the_job_is_finished(
    platform_api: Api, tenant: ApiTenant, kubectl: Kubectl, receiver: WebhookReceiver
) -> None:
    """PostgreSQL's jsonb refuses U+0000; the status is recorded with it spelled out."""
    job = submit(platform_api, tenant, webhookUrl=receiver.url)
    status = {"phase": "Failed", "reason": "OutOfMemory", "message": "out of\u0000memory"}
    set_status(kubectl, tenant.namespace, job["id"], status)

    recorded = settled(job["uid"], "refunded")[3]
    assert recorded["message"] == "out of\\u0000memory"
    payload = delivered_to(receiver, job["uid"])
    assert payload["job"]["status"]["message"] == "out of\\u0000memory"
    assert platform_api.process.metric(QUARANTINED, loop=Loop.JOB_WATCHER) == 0


# ------------------------------------------------------------ the watcher, unit by unit


class Deletions:
    """The API server's deletions, as the sweep sees them: refused for `refused` jobs."""

    def __init__(self, refused: dict[str, int]) -> None:
        self.refused = refused
        self.deleted: list[str] = []

    async def delete_job(self, namespace: str, name: str) -> None:
        if name in self.refused:
            raise ApiException(status=self.refused[name], reason="refused by the test")
        self.deleted.append(name)


def quarantined(loop: Loop) -> float:
    return REGISTRY.get_sample_value(QUARANTINED, {"loop": loop.value}) or 0.0


def body(namespace: str, name: str, spec: Any, status: Any) -> dict[str, Any]:
    meta = {
        "uid": str(uuid.uuid4()),
        "namespace": namespace,
        "name": name,
        "creationTimestamp": "2026-11-24T10:00:00Z",
    }
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.fixture
def tenant_row(local_stack: dict[str, str]) -> str:
    """A tenant's namespace in PostgreSQL only (the unit tests create no resources)."""
    db.migrate(os.environ["DIFFLEET_DATABASE_URL"])
    namespace = f"iso-{uuid.uuid4().hex[:8]}"
    with connect() as connection:
        tenants.create_tenant(connection, namespace, namespace, Tier.FREE, Decimal(10))
    return namespace


def reserved(job: dict[str, Any], tenant: str) -> None:
    """The job's history row with one credit reserved, as a submission writes it."""
    meta = job["metadata"]
    with connect() as connection:
        connection.execute(
            "insert into jobs (uid, tenant_id, namespace, name, spec, cost, credits,"
            " created_at) values (%s, %s, %s, %s, '{}', 1, 'reserved', now())",
            (meta["uid"], tenant, meta["namespace"], meta["name"]),
        )


async def watching(deletions: Deletions, work: Any) -> None:
    """Runs `work(watcher)` with a watcher on a pool of its own."""
    pool = await db.open_pool(os.environ["DIFFLEET_DATABASE_URL"], 1, 2, 10)
    try:
        runtime = SimpleNamespace(settings=ApiSettings(), pool=pool, kube=deletions)
        await work(JobWatcher(cast(Runtime, runtime)))
    finally:
        await pool.close()


def test_each_poisoned_event_is_quarantined_once_and_the_next_is_handled(
    tenant_row: str,
) -> None:
    ns = tenant_row
    nul = body(ns, "nul", {"model": "m", "prompt": "a\u0000b"}, {"phase": "Failed"})
    unknown = body(ns, "unknown", {"model": "m", "prompt": "p"}, {"phase": "Exploded"})
    shapeless = body(ns, "shapeless", "draw a circle", {"phase": "Succeeded"})
    following = body(ns, "following", {"model": "m", "prompt": "p"}, {"phase": "Succeeded"})
    for job in (shapeless, following):
        reserved(job, ns)
    before = quarantined(Loop.JOB_WATCHER)

    async def events(watcher: JobWatcher) -> None:
        for job in (nul, unknown, shapeless, following):
            await watcher.handle("MODIFIED", job)
        watcher.phases.clear()  # as after a restart: the shapeless job is met again
        await watcher.handle("MODIFIED", shapeless)

    asyncio.run(watching(Deletions({}), events))

    def row(job: dict[str, Any]) -> tuple[Any, ...]:
        found = history(job["metadata"]["uid"])
        assert found is not None
        return found

    with connect() as connection:
        spec = connection.execute(
            "select spec from jobs where uid = %s", (nul["metadata"]["uid"],)
        ).fetchone()
    assert spec == ({"model": "m", "prompt": "a\\u0000b"},)
    assert row(nul)[:3] == ("Failed", "none", None)
    assert row(unknown)[:3] == ("Exploded", "none", None)
    phase, credits, why, _ = row(shapeless)
    assert (phase, credits) == ("Succeeded", "settled")
    assert why.startswith("AttributeError")
    assert row(following)[:3] == ("Succeeded", "settled", None)
    assert quarantined(Loop.JOB_WATCHER) == before + 1


def test_a_job_the_api_server_refuses_to_delete_is_left_and_the_next_deleted(
    tenant_row: str,
) -> None:
    ns = tenant_row
    with connect() as connection:
        for name in ("stuck", "next"):
            connection.execute(
                "insert into jobs (uid, namespace, name, spec, credits, created_at)"
                " values (%s, %s, %s, '{}', 'abandoned', now())",
                (str(uuid.uuid4()), ns, name),
            )
    deletions = Deletions({"stuck": 422})
    before = quarantined(Loop.ABANDON_SWEEP)

    async def sweep(watcher: JobWatcher) -> None:
        for name in ("stuck", "next", "stuck"):
            if f"{ns}/{name}" not in watcher.undeletable:
                await watcher.delete_abandoned(ns, name)

    asyncio.run(watching(deletions, sweep))

    assert deletions.deleted == ["next"]
    assert quarantined(Loop.ABANDON_SWEEP) == before + 1
    with connect() as connection:
        reasons = dict(
            connection.execute(
                "select name, quarantine_reason from jobs where namespace = %s", (ns,)
            ).fetchall()
        )
    assert reasons["next"] is None
    assert "422" in reasons["stuck"]


def test_a_dependency_failure_is_raised_not_quarantined(tenant_row: str) -> None:
    ns = tenant_row
    job = body(ns, "waiting", {"model": "m", "prompt": "p"}, {"phase": "Succeeded"})
    deletions = Deletions({"overloaded": 503})
    before = {loop: quarantined(loop) for loop in Loop}

    async def outage(watcher: JobWatcher) -> None:
        with pytest.raises(ApiException):
            await watcher.delete_abandoned(ns, "overloaded")
        await watcher.runtime.pool.close()  # PostgreSQL gone, as far as the watcher knows
        with pytest.raises(psycopg.OperationalError):
            await watcher.handle("MODIFIED", job)

    asyncio.run(watching(deletions, outage))

    assert history(job["metadata"]["uid"]) is None
    assert {loop: quarantined(loop) for loop in Loop} == before


@pytest.mark.parametrize(
    ("error", "dependency"),
    [
        (psycopg.OperationalError("connection lost"), True),
        (psycopg.errors.AdminShutdown("shutting down"), True),
        (ApiException(status=503), True),
        (ApiException(status=429), True),
        (ApiException(status=403), True),
        (ApiException(status=None), True),
        (aiohttp.ServerDisconnectedError(), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (ExceptionGroup("connect", [OverflowError("port"), ConnectionResetError()]), True),
        (psycopg.errors.UntranslatableCharacter("\\u0000"), False),
        (ApiException(status=422), False),
        (ApiException(status=404), False),
        (ValueError("Exploded"), False),
        (AttributeError("'str' object has no attribute 'get'"), False),
        (ExceptionGroup("connect", [OverflowError("port")]), False),
    ],
)
def test_whose_fault_a_failure_is(error: BaseException, dependency: bool) -> None:
    assert dependency_failed(error) is dependency


def test_what_is_stored_spells_out_the_characters_postgresql_refuses() -> None:
    stored = storable({"key\u0000": ["lone \ud800", "\x01", 7, None, "é\tñ\n"]})
    assert stored == {"key\\u0000": ["lone \\ud800", "\\u0001", 7, None, "é\tñ\n"]}
