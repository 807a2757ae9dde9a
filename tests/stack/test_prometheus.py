"""The local stack's Prometheus: it loads the chart's rules, and scrapes what registers
itself in its file_sd folder (as a test or benchmark process may): a stub, and the
platform's own operator, API and worker, whose metrics it then answers queries with."""

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.api.support import spawn_api
from tests.support.platform import Platform, free_port
from tests.support.polling import eventually
from tests.support.stack import ROOT, stack_config

pytestmark = pytest.mark.stack

PROCESSES = ROOT / ".diffleet" / "run" / "prometheus" / "targets" / "processes"


def prometheus(path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{stack_config()['PROMETHEUS_PORT']}{path}"
    response = httpx.get(url, params=params, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


@contextmanager
def registered(port: int, component: str) -> Iterator[str]:
    """Lists 127.0.0.1:port for Prometheus, as the stack lists its processes (a file_sd
    file of its own under processes/); yields the target's instance."""
    instance = f"127.0.0.1:{port}"
    listing = PROCESSES / f"test-{uuid.uuid4().hex[:8]}.json"
    listing.write_text(json.dumps([{"targets": [instance], "labels": {"component": component}}]))
    try:
        yield instance
    finally:
        listing.unlink()


def scraped(instance: str) -> bool:
    """Prometheus lists the target and its last scrape succeeded."""
    targets = prometheus("/api/v1/targets")["activeTargets"]
    ours = [target for target in targets if target["labels"]["instance"] == instance]
    return bool(ours) and ours[0]["health"] == "up"


def values(query: str) -> list[str]:
    """The query's sample values, as Prometheus writes them."""
    return [sample["value"][1] for sample in prometheus("/api/v1/query", query=query)["result"]]


@pytest.fixture
def registered_process(local_stack: dict[str, str]) -> Iterator[str]:
    """A /metrics endpoint of this test, listed for Prometheus; yields its instance."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = CollectorRegistry()
    Gauge("diffleet_test_marker", "Set by the test", registry=registry).set(42)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with registered(port, "test") as instance:
            yield instance
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_prometheus_loads_the_charts_rules(local_stack: dict[str, str]) -> None:
    groups = prometheus("/api/v1/rules")["groups"]
    alerts = {
        rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"
    }
    assert "DiffleetWorkerLost" in alerts
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])


def test_prometheus_scrapes_a_registered_process(registered_process: str) -> None:
    eventually(
        lambda: scraped(registered_process),
        timeout=30,
        interval=1,
        what=f"{registered_process} scraped",
    )
    assert values(f'diffleet_test_marker{{instance="{registered_process}"}}') == ["42"]


def test_prometheus_scrapes_the_operator_the_api_and_a_worker(
    namespace: str, platform: Platform
) -> None:
    """The components' own /metrics, scraped: the operator counts the worker it sees, the
    worker says it is ready, the API counts the request it answered."""
    operator = platform.operator()
    worker_port = free_port()
    platform.worker("w1", metrics_port=str(worker_port), metrics_host="127.0.0.1")
    platform.wait_for_workers(operator, "t4", 1)
    [api] = spawn_api(namespace, watcher="false")
    try:
        with api.client() as http:
            assert http.get("/v1/jobs").status_code == 401
        with (
            registered(operator.metrics_port, "operator") as operator_target,
            registered(api.process.metrics_port, "api") as api_target,
            registered(worker_port, "worker") as worker_target,
        ):
            for target in (operator_target, api_target, worker_target):
                eventually(
                    lambda target=target: scraped(target),  # type: ignore[misc]
                    timeout=30,
                    interval=1,
                    what=f"{target} scraped",
                )
            assert values(f'diffleet_workers{{instance="{operator_target}",pool="t4"}}') == ["1"]
            assert values(f'diffleet_worker_ready{{instance="{worker_target}"}}') == ["1"]
            unauthorized = (
                f'diffleet_api_request_seconds_count{{instance="{api_target}",'
                f'component="api",route="/v1/jobs",method="GET",status="401"}}'
            )
            assert values(unauthorized) == ["1"]
    finally:
        api.process.stop()
