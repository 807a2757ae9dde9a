"""Traces through the stack's OpenTelemetry Collector: a job is one trace, from the API
request (or the operator's admission of a job created with kubectl) through dispatch to
the worker's stages, read back from the collector's file (.diffleet/traces/traces.jsonl).
The test's processes export there through the OTEL_EXPORTER_OTLP_ENDPOINT of `make env`."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from diffleet_core import telemetry
from tests.api.support import create_tenant, spawn_api
from tests.support.platform import Platform, apply_job, register_model, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import ROOT, Kubectl

pytestmark = pytest.mark.stack

TRACES = ROOT / ".diffleet" / "traces" / "traces.jsonl"
# A worker's spans, the last to be exported (the simulated runner fetches no inputs).
WORKER_SPANS = {"run job", "load", "denoise", "encode", "upload"}


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, str]


class Collected:
    """The spans the collector writes from now on (it appends OTLP JSON lines, one
    export request a line)."""

    def __init__(self, path: Path = TRACES) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def spans(self) -> list[Span]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as file:
            if file.seek(0, 2) < self.offset:
                self.offset = 0  # rotated meanwhile
            file.seek(self.offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        return [span for line in complete.splitlines() for span in parsed(json.loads(line))]

    def trace(self, trace_id: str, services: int) -> list[Span] | None:
        """The trace's spans once the worker's and every service's are in."""
        spans = [span for span in self.spans() if span.trace_id == trace_id]
        names = {span.name for span in spans if span.service == "diffleet-worker"}
        if names >= WORKER_SPANS and len({span.service for span in spans}) == services:
            return spans
        return None


def parsed(request: dict[str, Any]) -> list[Span]:
    spans = []
    for resource_spans in request.get("resourceSpans", []):
        service = attributes(resource_spans["resource"])["service.name"]
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                spans.append(
                    Span(
                        service=service,
                        trace_id=span["traceId"],
                        span_id=span["spanId"],
                        parent_id=span.get("parentSpanId", ""),
                        name=span["name"],
                        attributes=attributes(span),
                    )
                )
    return spans


def attributes(item: dict[str, Any]) -> dict[str, str]:
    """OTLP JSON attributes as strings ({"key": k, "value": {"stringValue": v}})."""
    return {
        attribute["key"]: str(next(iter(attribute["value"].values()), ""))
        for attribute in item.get("attributes", [])
    }


def trace_of(kubectl: Kubectl, namespace: str, name: str) -> tuple[str, str]:
    """The job's uid and the trace id its annotation carries."""
    metadata = kubectl.json("get", "generationjob", name, "-n", namespace)["metadata"]
    traceparent = metadata.get("annotations", {}).get(telemetry.TRACEPARENT_ANNOTATION)
    assert traceparent, f"job {name} has no {telemetry.TRACEPARENT_ANNOTATION} annotation"
    return metadata["uid"], traceparent.split("-")[1]


def one(spans: list[Span], service: str, name: str) -> Span:
    [span] = [span for span in spans if span.service == service and span.name == name]
    return span


def assert_dispatched_to_the_worker_stages(spans: list[Span], admission: Span) -> None:
    """admission -> dispatch -> the worker's run -> its stages, each the next's parent."""
    dispatch = one(spans, "diffleet-operator", "dispatch")
    run = one(spans, "diffleet-worker", "run job")
    assert dispatch.parent_id == admission.span_id
    assert run.parent_id == dispatch.span_id
    for stage in WORKER_SPANS - {"run job"}:
        assert one(spans, "diffleet-worker", stage).parent_id == run.span_id, stage


def test_a_job_is_one_trace_from_its_creation_to_the_worker_stages(
    namespace: str, platform: Platform, kubectl: Kubectl
) -> None:
    """One job submitted through the API, one created with kubectl (one platform for both:
    starting processes is what takes time here)."""
    collected = Collected()
    platform.operator()
    platform.worker("w1")
    register_model(kubectl, namespace, "m")
    apply_job(kubectl, namespace, "by-hand", model="m", steps=2)
    [api] = spawn_api(namespace, watcher="false")
    try:
        tenant = create_tenant(namespace)
        with api.client(tenant.member) as http:
            created = http.post("/v1/jobs", json={"model": "m", "prompt": "a lighthouse"})
        assert created.status_code == 201, created.text
        submitted = created.json()["id"]
        wait_for_phase(kubectl, namespace, submitted, "Succeeded")
    finally:
        api.process.stop()
    wait_for_phase(kubectl, namespace, "by-hand", "Succeeded")

    # Through the API: the request's trace, continued by the operator and the worker.
    uid, trace_id = trace_of(kubectl, namespace, submitted)
    spans = eventually(lambda: collected.trace(trace_id, services=3), timeout=30, what="trace")
    request = one(spans, "diffleet-api", "POST /v1/jobs")
    create = one(spans, "diffleet-api", "create job")
    admission = one(spans, "diffleet-operator", "admission")
    assert create.parent_id == request.span_id
    assert admission.parent_id == create.span_id
    assert_dispatched_to_the_worker_stages(spans, admission)
    assert admission.attributes[telemetry.JOB_UID] == uid
    assert one(spans, "diffleet-worker", "run job").attributes[telemetry.WORKER] == "w1"
    # One trace: no span about the job anywhere else.
    traces = {s.trace_id for s in collected.spans() if s.attributes.get(telemetry.JOB_UID) == uid}
    assert traces == {trace_id}

    # With kubectl: a trace that starts at admission, written back on the job.
    uid, trace_id = trace_of(kubectl, namespace, "by-hand")
    spans = eventually(lambda: collected.trace(trace_id, services=2), timeout=30, what="trace")
    admission = one(spans, "diffleet-operator", "admission")
    assert admission.parent_id == ""
    assert admission.attributes[telemetry.JOB_UID] == uid
    assert_dispatched_to_the_worker_stages(spans, admission)
