"""A stored job the models refuse (written before a rule existed, or past validation) is
still shown by every read route, never a 5xx and never hiding the tenant's other jobs:
its refused characters escaped, each field that still fails left out and named in
`invalidFields`. Against a real API process, with jobs poisoned by paths the CRD allows:
a webhook URL its pattern lets through but the HTTP client cannot parse, a status
written through the status subresource, rows of the history."""

import json
import uuid
from typing import Any

import httpx
import pytest
from psycopg.types.json import Jsonb

from tests.api.support import Api, ApiTenant, connect, sse_events
from tests.api.test_jobs import SPEC
from tests.api.test_watcher_isolation import YEAR_ZERO, set_status
from tests.support.stack import Kubectl

# The CRD's pattern lets this host through; httpx cannot decode it (IDNA), so the spec's
# model refuses it.
UNPARSABLE_URL = "http://xn--/hook"
POISONED_STATUS = {"phase": "Running", "completedAt": YEAR_ZERO, "message": "out of\u0000memory"}
INVALID = {"spec.webhookUrl": "format", "status.completedAt": "format"}


def invalid_fields(job: dict[str, Any]) -> dict[str, str]:
    """{field: rule} of what the job's stored object holds that the models refuse."""
    return {error["field"]: error["rule"] for error in job["invalidFields"]}


def poisoned_job(kubectl: Kubectl, namespace: str) -> str:
    """A job created with kubectl whose spec and status the models refuse in part."""
    name = f"poisoned-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "GenerationJob",
        "metadata": {"name": name},
        "spec": SPEC | {"webhookUrl": UNPARSABLE_URL},
    }
    kubectl.apply(json.dumps(body), namespace)
    set_status(kubectl, namespace, name, POISONED_STATUS)
    return name


def assert_shown(job: dict[str, Any], name: str) -> None:
    """`job` is the poisoned job, its readable fields shown and the others named."""
    assert job["id"] == name
    assert job["spec"]["model"] == SPEC["model"]
    assert job["spec"]["webhookUrl"] is None
    assert job["status"]["phase"] == "Running"
    assert job["status"]["completedAt"] is None
    assert job["status"]["message"] == "out of\\u0000memory"
    assert invalid_fields(job) == INVALID


def first_event(http: httpx.Client, job_id: str) -> tuple[str, dict[str, Any]]:
    """The event and data of the first Server-Sent Event of the job's stream."""
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        _, event, data = next(sse_events(response.iter_lines()))
    return event, data


def test_every_read_route_shows_a_job_the_models_refuse(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    with api.client(tenant.member) as http:
        created = http.post("/v1/jobs", json=SPEC)
        assert created.status_code == 201, created.text
        good = created.json()["id"]
        name = poisoned_job(kubectl, tenant.namespace)

        got = http.get(f"/v1/jobs/{name}")
        assert got.status_code == 200, got.text
        assert_shown(got.json(), name)

        listed = http.get("/v1/jobs", params={"model": str(SPEC["model"])})
        assert listed.status_code == 200, listed.text
        jobs = {job["id"]: job for job in listed.json()["items"]}
        assert set(jobs) == {good, name}
        assert_shown(jobs[name], name)
        assert jobs[good]["invalidFields"] == []

        assert first_event(http, name) == (
            "running",
            {"phase": "Running", "attempts": 0, "worker": None},
        )

        cancelled = http.delete(f"/v1/jobs/{name}")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["spec"]["cancel"] is True
        assert invalid_fields(cancelled.json()) == INVALID

        set_status(kubectl, tenant.namespace, name, {"phase": "Cancelled"})
        event, data = first_event(http, name)
        assert event == "cancelled"
        assert data["id"] == name
        assert invalid_fields(data) == INVALID
        assert http.delete(f"/v1/jobs/{name}").status_code == 202  # finished: left as it is


@pytest.mark.parametrize(
    ("spec", "status", "shown", "invalid"),
    [
        (
            # As the watcher stored a NUL from before the CRD refused it: escaped.
            SPEC | {"prompt": "a\\u0000b"},
            {"phase": "Exploded", "completedAt": YEAR_ZERO},
            {"prompt": "a\\u0000b"},
            {"status.phase": "enum", "status.completedAt": "format"},
        ),
        (
            {"steps": 4},
            {"phase": "Failed", "reason": "Timeout"},
            None,
            {"spec.model": "x-kubernetes-validations"},
        ),
    ],
    ids=["status refused", "spec unreadable"],
)
def test_a_history_row_the_models_refuse_is_shown(
    api: Api,
    tenant: ApiTenant,
    spec: dict[str, Any],
    status: dict[str, Any],
    shown: dict[str, Any] | None,
    invalid: dict[str, str],
) -> None:
    """A job whose resource is gone is read from its history row."""
    name = f"gone-{uuid.uuid4().hex[:6]}"
    with connect() as connection:
        connection.execute(
            "insert into jobs (uid, tenant_id, namespace, name, spec, status, phase, cost,"
            " created_at) values (%s, %s, %s, %s, %s, %s, %s, 1, now())",
            (str(uuid.uuid4()), tenant.id, tenant.namespace, name, Jsonb(spec), Jsonb(status),
             status["phase"]),
        )  # fmt: skip
    with api.client(tenant.member) as http:
        got = http.get(f"/v1/jobs/{name}")
        outputs = http.get(f"/v1/jobs/{name}/outputs")
    assert got.status_code == 200, got.text
    job = got.json()
    assert job["id"] == name
    assert job["cost"] == 1
    if shown is None:
        assert job["spec"] is None
    else:
        assert job["spec"].items() >= shown.items()
    assert invalid_fields(job) == invalid
    assert outputs.status_code == 409, outputs.text  # not Succeeded, as far as can be read
