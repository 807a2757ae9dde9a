"""Traces: the job's trace context through a GenerationJob annotation and AMQP headers,
the sampler that keeps client calls out of new traces, and a process exporting its spans
over OTLP/HTTP (to a receiver in this test) when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import SpanKind, Tracer, format_trace_id, get_current_span

from diffleet_core import telemetry


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exported: InMemorySpanExporter) -> Tracer:
    """A tracer of its own provider (the global one is left alone), sampled as the
    components' are."""
    provider = TracerProvider(sampler=ParentBased(root=telemetry.JobRoots(1.0)))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider.get_tracer("test")


def test_the_annotation_carries_the_trace_to_the_next_span(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    annotations: dict[str, str] = {}
    with tracer.start_as_current_span("create job"):
        telemetry.annotate(annotations)
    assert annotations[telemetry.TRACEPARENT_ANNOTATION].startswith("00-")
    context = telemetry.context_from_annotations(annotations)
    with tracer.start_as_current_span("admission", context=context):
        pass
    created, admission = exported.get_finished_spans()
    assert admission.parent is not None
    assert admission.parent.trace_id == created.context.trace_id
    assert admission.parent.span_id == created.context.span_id


def test_amqp_headers_carry_the_trace_as_str_or_bytes(tracer: Tracer) -> None:
    with tracer.start_as_current_span("dispatch") as dispatch:
        headers = telemetry.amqp_headers()
    trace_id = dispatch.get_span_context().trace_id
    for value in (headers["traceparent"], headers["traceparent"].encode()):
        context = telemetry.context_from_headers({"traceparent": value})
        assert context is not None
        assert get_current_span(context).get_span_context().trace_id == trace_id


def test_outside_any_trace_nothing_is_written_or_read() -> None:
    annotations: dict[str, str] = {}
    telemetry.annotate(annotations)
    assert annotations == {}
    assert telemetry.amqp_headers() == {}
    assert telemetry.context_from_annotations(None) is None
    assert telemetry.context_from_headers({}) is None
    assert telemetry.context_from_annotations({telemetry.TRACEPARENT_ANNOTATION: "junk"}) is None
    assert telemetry.context_from_headers({"traceparent": 7}) is None


def test_client_calls_start_no_trace_but_join_a_job_s(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("GET /apis/leases", kind=SpanKind.CLIENT):
        pass
    with (
        tracer.start_as_current_span("dispatch", kind=SpanKind.PRODUCER),
        tracer.start_as_current_span("PATCH status", kind=SpanKind.CLIENT),
    ):
        pass
    assert sorted(span.name for span in exported.get_finished_spans()) == [
        "PATCH status",
        "dispatch",
    ]


def test_the_sample_ratio_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert telemetry.sample_ratio() == 0.25
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "lots")
    assert telemetry.sample_ratio() == 1.0
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG")
    assert telemetry.sample_ratio() == 1.0


def test_without_an_endpoint_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert telemetry.setup_tracing("diffleet-test") is False


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps each export request it is sent."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_process_exports_its_spans_and_flushes_them_at_exit(receiver: str) -> None:
    program = (
        "from diffleet_core import telemetry\n"
        "assert telemetry.setup_tracing('diffleet-test')\n"
        "with telemetry.tracer.start_as_current_span('admission'):\n"
        "    print(telemetry.traceparent())\n"
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_SERVICE_NAME": ""}
    ran = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    trace_id = ran.stdout.split("-")[1]
    # The span ended just before exit, long before the batch's schedule: only the
    # flush at exit can have sent it.
    [(path, body)] = Receiver.received
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "diffleet-test"
    [span] = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert span.name == "admission"
    assert format_trace_id(int.from_bytes(span.trace_id, "big")) == trace_id
