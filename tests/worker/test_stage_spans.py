"""The real (diffusers, CPU) runner's stage spans for an img2img job: fetch, load,
denoise, encode and upload, each a child of the run's span, in that order, with the S3
calls each stage makes inside it (the botocore instrumentation, as a traced worker has
it). tests/stack/test_tracing.py follows a whole job through the collector, with the
simulated runner, which fetches nothing."""

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from diffleet_core import telemetry
from diffleet_core.messages import DispatchedJob, JobRef, ModelRef
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.storage import S3Location
from diffleet_worker import diffusers_runner, finishing, main
from diffleet_worker.config import WorkerSettings
from tests.support.groups import DIFFUSERS
from tests.support.models import RegisteredModel
from tests.support.torch_threads import one_torch_thread
from tests.worker.conftest import circle, upload_image

__all__ = ["one_torch_thread"]

pytestmark = DIFFUSERS

STAGES = ["fetch", "load", "denoise", "encode", "upload"]


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The worker's spans, from a provider of this test's own, sampled as the worker's
    are: the modules' tracer is pointed at it, and the global provider is left alone
    (it is set once per process, for every later test of this one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=telemetry.JobRoots(1.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("diffleet")
    for module in (telemetry, diffusers_runner, finishing):
        monkeypatch.setattr(module, "tracer", tracer)
    instrumentor = BotocoreInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    yield exporter
    instrumentor.uninstrument()


def order_for(model: RegisteredModel, init_image: str) -> DispatchedJob:
    uid = str(uuid.uuid4())
    spec = model.spec
    return DispatchedJob(
        job=JobRef(uid=uid, namespace="stage-spans", name=f"img2img-{uid[:8]}", attempt=1),
        spec=GenerationJobSpec.model_validate(
            {
                "model": model.name,
                "prompt": "a red circle",
                "mode": "img2img",
                "initImage": init_image,
                "steps": 2,
                "width": 64,
                "height": 64,
            }
        ),
        seed=1,
        model=ModelRef(
            namespace=model.namespace,
            name=model.name,
            source=spec.source,
            format=spec.format,
            type=spec.type,
            base_model=spec.base_model,
            digest=model.digest,
        ),
        output_bucket="diffleet-outputs",
        deadline=datetime.now(UTC) + timedelta(minutes=10),
    )


async def run(runner: Any, order: DispatchedJob) -> Any:
    async def on_step(*_: Any) -> None:
        pass

    return await runner.run(order, asyncio.Event(), on_step)


def s3_calls(spans: list[ReadableSpan], parent: ReadableSpan) -> list[str]:
    """The S3 operations made inside `parent`, as the botocore instrumentation names them."""
    return [
        span.name
        for span in spans
        if span.parent is not None
        and span.parent.span_id == parent.context.span_id
        and span.name.startswith("S3.")
    ]


def test_an_img2img_run_traces_each_stage_under_the_run_span(
    exported: InMemorySpanExporter,
    models: dict[str, RegisteredModel],
    tmp_path: Path,
) -> None:
    init_image = upload_image(circle((220, 30, 30)), "init")
    settings = WorkerSettings(
        worker_id="stage-spans",
        device="cpu",
        cache_dir=tmp_path / "cache",  # empty: the checkpoint comes cold, from S3
        # A process-wide torch setting; spans do not depend on it.
        deterministic=False,
    )
    runner = main.make_runner(settings, main.s3_client(), simulate=False)
    order = order_for(models["tiny-sd15"], init_image)
    with telemetry.tracer.start_as_current_span("run job") as run_span:
        result = asyncio.run(run(runner, order))
    [output] = result.outputs
    location = S3Location.parse(output.uri)
    assert boto3.client("s3").head_object(Bucket=location.bucket, Key=location.key)

    spans = list(exported.get_finished_spans())
    run_id = run_span.get_span_context().span_id
    stages = [span for span in spans if span.parent is not None and span.parent.span_id == run_id]
    # Post-processing has a span too (empty here: the job asks for none).
    assert [span.name for span in stages] == [*STAGES[:3], "postprocess", *STAGES[3:]]
    assert all(span.context.trace_id == run_span.get_span_context().trace_id for span in stages)
    for before, after in itertools.pairwise(stages):
        assert before.end_time is not None
        assert after.start_time is not None
        assert before.end_time <= after.start_time, (before.name, after.name)
    by_name = {span.name: span for span in stages}
    # The init image is read inside fetch, the cold checkpoint's files inside load, the
    # output written inside upload.
    assert s3_calls(spans, by_name["fetch"]) == ["S3.GetObject"]
    assert "S3.GetObject" in s3_calls(spans, by_name["load"])
    assert s3_calls(spans, by_name["upload"]) == ["S3.PutObject"]
    assert s3_calls(spans, by_name["denoise"]) == s3_calls(spans, by_name["encode"]) == []
