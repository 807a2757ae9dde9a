"""The local stack's Prometheus: it loads the chart's rules, and scrapes a process that
registers itself in its file_sd folder (as a test or benchmark process may)."""

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.support.polling import eventually
from tests.support.stack import ROOT, stack_config

pytestmark = pytest.mark.stack

PROCESSES = ROOT / ".diffleet" / "run" / "prometheus" / "targets" / "processes"


def prometheus(path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{stack_config()['PROMETHEUS_PORT']}{path}"
    response = httpx.get(url, params=params, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


@pytest.fixture
def registered_process(local_stack: dict[str, str]) -> Iterator[str]:
    """A /metrics endpoint of this test, listed for Prometheus; yields its instance."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = CollectorRegistry()
    Gauge("diffleet_test_marker", "Set by the test", registry=registry).set(42)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    instance = f"127.0.0.1:{port}"
    listing = PROCESSES / f"test-{uuid.uuid4().hex[:8]}.json"
    listing.write_text(json.dumps([{"targets": [instance], "labels": {"component": "test"}}]))
    try:
        yield instance
    finally:
        listing.unlink()
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
    def scraped() -> bool:
        targets = prometheus("/api/v1/targets")["activeTargets"]
        ours = [t for t in targets if t["labels"]["instance"] == registered_process]
        return bool(ours) and ours[0]["health"] == "up"

    eventually(scraped, timeout=30, interval=1, what=f"{registered_process} scraped")
    result = prometheus(
        "/api/v1/query", query=f'diffleet_test_marker{{instance="{registered_process}"}}'
    )
    assert [sample["value"][1] for sample in result["result"]] == ["42"]
