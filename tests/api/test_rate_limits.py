"""Rate limits are shared by API replicas: two processes, one bucket in PostgreSQL."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.api.support import ApiTenant, spawn_api
from tests.api.test_jobs import SPEC
from tests.support.stack import Kubectl

LIMITS = json.dumps(
    {"free": {"requests_per_minute": 6, "generations_per_hour": 2, "uploads_per_hour": 2}}
)


def test_the_n_plus_first_request_is_429_across_two_processes(tenant: ApiTenant) -> None:
    first, second = spawn_api(tenant.namespace, count=2, watcher="false", tier_limits=LIMITS)
    try:
        clients = [first.client(tenant.member), second.client(tenant.member)]
        answers = [clients[i % 2].get("/v1/jobs") for i in range(6)]
        assert [a.status_code for a in answers] == [200] * 6
        assert answers[0].headers["ratelimit-limit"] == "6"
        assert [int(a.headers["ratelimit-remaining"]) for a in answers] == [5, 4, 3, 2, 1, 0]

        refused = clients[0].get("/v1/jobs")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-remaining"] == "0"
        assert clients[1].get("/v1/jobs").status_code == 429
    finally:
        first.process.stop()
        second.process.stop()


def test_generations_per_hour_limit_the_jobs(tenant: ApiTenant) -> None:
    [api] = spawn_api(tenant.namespace, count=1, watcher="false", tier_limits=LIMITS)
    try:
        with api.client(tenant.member) as http:
            assert http.post("/v1/jobs:batch", json={"jobs": [SPEC, SPEC]}).status_code == 201
            refused = http.post("/v1/jobs", json=SPEC)
        assert refused.status_code == 429
        assert "generations" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) > 60
    finally:
        api.process.stop()


def test_concurrent_submissions_get_one_generation_token_each_and_losers_leave_no_job(
    tenant: ApiTenant, kubectl: Kubectl
) -> None:
    """Six submissions at once against 2 generation tokens: each passes the bucket as read
    with its credential, but the reservations decide, so 2 are created and 4 get a 429
    whose GenerationJob is deleted again."""
    limits = json.dumps(
        {"free": {"requests_per_minute": 100, "generations_per_hour": 2, "uploads_per_hour": 2}}
    )
    [api] = spawn_api(tenant.namespace, count=1, watcher="false", tier_limits=limits)
    try:
        clients = [api.client(tenant.member) for _ in range(6)]

        def submit(http: httpx.Client) -> httpx.Response:
            with http:
                return http.post("/v1/jobs", json=SPEC)

        with ThreadPoolExecutor(len(clients)) as pool:
            answers = list(pool.map(submit, clients))
    finally:
        api.process.stop()
    assert sorted(a.status_code for a in answers) == [201, 201, 429, 429, 429, 429]
    created = {a.json()["id"] for a in answers if a.status_code == 201}
    jobs = kubectl.json("get", "gj", "-n", tenant.namespace)["items"]
    # The losers' jobs may still be listed, deleted, until the operator drops its finalizer.
    kept = {job["metadata"]["name"] for job in jobs if "deletionTimestamp" not in job["metadata"]}
    assert kept == created
