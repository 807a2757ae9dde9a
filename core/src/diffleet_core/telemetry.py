"""Traces of every component (OpenTelemetry): one trace per job, from the API request (or
the operator's admission of a job created with kubectl) through dispatch to the worker's
stages.

The W3C trace context travels with the job: in the GenerationJob's annotation
`diffleet.io/traceparent` (set by the API on create, or by the operator's admission) and
in the `traceparent` header of the AMQP messages the broker publishes
(diffleet_core.broker).

Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (OTLP over http/protobuf); the
standard OTEL_* variables apply (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER_ARG: the share of
new traces kept). Spans are exported in batches in the background, each export bounded by
`EXPORT_TIMEOUT_SECONDS`; those still buffered are flushed when the process exits.
"""

import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

# The GenerationJob annotation holding the job's trace context (a W3C traceparent).
TRACEPARENT_ANNOTATION = "diffleet.io/traceparent"
# The AMQP message header holding it.
TRACEPARENT_HEADER = "traceparent"

EXPORT_TIMEOUT_SECONDS = 5.0

# Span attributes.
JOB_UID = "diffleet.job.uid"
JOB_NAMESPACE = "diffleet.job.namespace"
JOB_NAME = "diffleet.job.name"
JOB_ATTEMPT = "diffleet.job.attempt"
MODEL = "diffleet.model"
TIER = "diffleet.tier"
POOL = "diffleet.pool"
WORKER = "diffleet.worker"

tracer = trace.get_tracer("diffleet")
logger = logging.getLogger(__name__)
_propagator = TraceContextTextMapPropagator()


class JobRoots(Sampler):
    """Starts traces for the platform's own spans (a share of them), never for a client
    call made outside one: the operator's watches and Lease renewals, a worker's S3 calls
    between jobs would each be a trace of one span. Inside a job's trace, client calls
    follow their parent (ParentBased)."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"JobRoots{{{self._ratio.get_description()}}}"


def setup_tracing(service_name: str) -> bool:
    """Exports this process's spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set;
    True then (the caller adds its library instrumentations), else False and every span
    stays a no-op. OTEL_SERVICE_NAME, when set, names the service instead."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    # Imported here: the exporter pulls in protobuf, which a process without tracing
    # never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(
        sampler=ParentBased(root=JobRoots(sample_ratio())),
        resource=Resource.create({SERVICE_NAME: name}),
        shutdown_on_exit=True,  # flushes the buffered spans at exit
    )
    exporter = OTLPSpanExporter(timeout=EXPORT_TIMEOUT_SECONDS)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000)
    )
    trace.set_tracer_provider(provider)
    logger.info("traces of %s exported to %s", name, os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    return True


def shutdown_tracing() -> None:
    """Exports the spans still buffered (within the export timeout) and stops tracing: for
    a process whose end skips exit handlers (uvicorn re-raises the SIGTERM it handled)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def job_attributes(namespace: str, name: str, uid: str) -> dict[str, str]:
    """The attributes naming a job on its spans."""
    return {JOB_NAMESPACE: namespace, JOB_NAME: name, JOB_UID: uid}


def sample_ratio() -> float:
    """The share of new traces kept (OTEL_TRACES_SAMPLER_ARG, default all)."""
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "")
    try:
        ratio = float(raw) if raw else 1.0
    except ValueError:
        logger.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number; keeping every trace", raw)
        return 1.0
    return min(max(ratio, 0.0), 1.0)


def traceparent() -> str | None:
    """The current span's context as a W3C traceparent; None outside any trace."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT_HEADER)


def context_of(value: str | bytes | None) -> Context | None:
    """The trace context a traceparent names; None when absent or malformed."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not value:
        return None
    context = _propagator.extract({TRACEPARENT_HEADER: value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def annotate(annotations: MutableMapping[str, str]) -> None:
    """Writes the current trace context into a GenerationJob's annotations (if any)."""
    if value := traceparent():
        annotations[TRACEPARENT_ANNOTATION] = value


def context_from_annotations(annotations: Mapping[str, str] | None) -> Context | None:
    """The trace context a GenerationJob carries in its annotation."""
    return context_of((annotations or {}).get(TRACEPARENT_ANNOTATION))


def amqp_headers() -> dict[str, str]:
    """Headers carrying the current trace context to a message's consumer."""
    value = traceparent()
    return {TRACEPARENT_HEADER: value} if value else {}


def context_from_headers(headers: Mapping[str, object] | None) -> Context | None:
    """The trace context an AMQP message carries in its headers."""
    value = (headers or {}).get(TRACEPARENT_HEADER)
    return context_of(value) if isinstance(value, str | bytes) else None
