"""A worker's training orders (issue 20) through the stack's RabbitMQ and MinIO, with no
operator: the test publishes DispatchedTraining straight to the worker's queue and
PreemptTraining / CancelJob on the control exchange, and reads the training's events
from the durable training results queue and its loss from the progress exchange.

Simulated workers (scripted step time, real storage keys) for the protocol; one real
worker on micro-shapes for a preemption and its resume.
"""

import hashlib
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pika
import pytest
from botocore.config import Config

from diffleet_core.datasets import DatasetReason, dataset_prefix
from diffleet_core.fleet import INVENTORY_ANNOTATION, WorkerInventory
from diffleet_core.messages import (
    TRAINING_EVENT,
    CancelJob,
    DispatchedTraining,
    JobRef,
    Message,
    ModelRef,
    PreemptTraining,
    TrainingCheckpointed,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
    TrainingStopped,
    TrainingSucceeded,
)
from diffleet_core.queues import TRAINING_PROGRESS_KEYS, Topology
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_core.resources.training_job import TrainingJobSpec
from diffleet_core.settings import Buckets
from diffleet_core.storage import S3Location, checkpoints_prefix
from hack.models.datasets import NEW_WORD, shapes_dataset, upload_dataset
from tests.support.groups import DIFFUSERS
from tests.support.models import RegisteredModel
from tests.support.platform import Platform, Process
from tests.support.polling import eventually
from tests.support.stack import Kubectl
from tests.worker.conftest import WORKER_START

BUCKETS = Buckets()
BLUE = (30, 30, 220)
EXAMPLES = 8
# Simulated steps long enough to stop between two of them, short enough for a fast test.
SIM_STEP_SECONDS = 0.1
SIM_WORKER = "sim"
EVENT_TIMEOUT = 60
# The real worker: micro-shapes at 64 px, small batches, no validation prompts (each
# renders 20 denoising steps at every checkpoint).
REAL_WORKER = "cpu"
REAL_TIMEOUT = 300

TrainingEvent = (
    TrainingStarted | TrainingCheckpointed | TrainingStopped | TrainingSucceeded | TrainingFailed
)
Final = TrainingSucceeded | TrainingStopped | TrainingFailed


@dataclass
class Wire:
    """The test's side of RabbitMQ for one queue prefix: orders in, events and progress
    out (read with basic_get: the test's thread is the connection's only user)."""

    namespace: str
    topology: Topology = field(init=False)
    events: dict[str, list[TrainingEvent]] = field(default_factory=lambda: defaultdict(list))
    progress: dict[str, list[TrainingProgress]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.topology = Topology(prefix=self.namespace)
        url = pika.URLParameters(os.environ["DIFFLEET_AMQP_URL"])
        self.connection = pika.BlockingConnection(url)
        self.channel = self.connection.channel()
        # Declared as the platform declares them: idempotent, and nothing published
        # before a worker starts is lost.
        self.channel.queue_declare(self.topology.training_results_queue, durable=True)
        self.channel.exchange_declare(
            self.topology.progress_exchange, exchange_type="topic", durable=True
        )
        self.channel.exchange_declare(
            self.topology.control_exchange, exchange_type="topic", durable=True
        )
        declared = self.channel.queue_declare("", exclusive=True, auto_delete=True)
        self.progress_queue = declared.method.queue
        self.channel.queue_bind(
            self.progress_queue, self.topology.progress_exchange, TRAINING_PROGRESS_KEYS
        )

    def dispatch(self, worker: str, order: DispatchedTraining) -> None:
        queue = self.topology.worker_queue(worker)
        self.channel.queue_declare(queue, durable=True)
        self.channel.basic_publish(
            "", queue, order.to_bytes(), pika.BasicProperties(delivery_mode=2)
        )

    def control(self, worker: str, order: Message) -> None:
        self.channel.basic_publish(self.topology.control_exchange, worker, order.to_bytes())

    def pump(self) -> None:
        """Takes every message waiting in the results and progress queues."""
        for queue, keep in (
            (self.topology.training_results_queue, self._keep_event),
            (self.progress_queue, self._keep_progress),
        ):
            while True:
                method, _, body = self.channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                keep(body)

    def _keep_event(self, body: bytes) -> None:
        event = TRAINING_EVENT.validate_json(body)
        self.events[event.job.uid].append(event)

    def _keep_progress(self, body: bytes) -> None:
        report = TrainingProgress.model_validate_json(body)
        self.progress[report.job.uid].append(report)

    def final(self, job: JobRef, timeout: float = EVENT_TIMEOUT) -> Final:
        """The attempt's final event (succeeded, stopped or failed), once it comes."""

        # A list, not the event: mypy would solve eventually's T as the events' base.
        def found() -> list[Final] | None:
            self.pump()
            return [event for event in self.attempt(job) if isinstance(event, Final)] or None

        return eventually(found, timeout=timeout, interval=0.02, what=f"{job.name} ended")[0]

    def attempt(self, job: JobRef) -> list[TrainingEvent]:
        return [event for event in self.events[job.uid] if event.job.attempt == job.attempt]

    def wait_for_step(self, job: JobRef, step: int, timeout: float = EVENT_TIMEOUT) -> int:
        """The step of the first progress report at or past `step`."""

        def reached() -> int | None:
            self.pump()
            steps = [report.step for report in self.progress[job.uid] if report.step >= step]
            return steps[0] if steps else None

        return eventually(reached, timeout=timeout, interval=0.02, what=f"{job.name} at {step}")

    def close(self) -> None:
        self.connection.close()


@pytest.fixture(scope="module")
def s3(local_stack: dict[str, str]) -> Any:
    return boto3.client("s3", config=Config(connect_timeout=5, read_timeout=60))


@pytest.fixture(scope="module")
def platform_of_module(module_namespace: str) -> Iterator[Platform]:
    running = Platform(namespace=module_namespace, job_namespaces=[module_namespace])
    yield running
    running.stop_all()


@pytest.fixture(scope="module")
def wire(module_namespace: str) -> Iterator[Wire]:
    connected = Wire(module_namespace)
    yield connected
    connected.close()


@pytest.fixture(scope="module")
def sim(platform_of_module: Platform, wire: Wire) -> Process:
    """A simulated worker that reports every step's loss."""
    return platform_of_module.worker(
        SIM_WORKER,
        sim_training_step_seconds=str(SIM_STEP_SECONDS),
        sim_load_seconds="0",
        training_progress_seconds="0",
    )


@pytest.fixture(scope="module")
def dataset(s3: Any, module_namespace: str) -> str:
    prefix = dataset_prefix(module_namespace, "zorp")
    return upload_dataset(s3, BUCKETS.uploads, prefix, shapes_dataset(BLUE, NEW_WORD, EXAMPLES, 0))


SIM_MODEL = ModelRef(
    namespace="diffleet-system",
    name="sim-base",
    source="s3://diffleet-models/sim-base.safetensors",
    format=ModelFormat.SAFETENSORS,
    type=ModelType.CHECKPOINT,
    base_model=BaseModelFamily.SD15,
    digest="0" * 64,
)


def model_ref(model: RegisteredModel) -> ModelRef:
    spec = model.spec
    return ModelRef(
        namespace=model.namespace,
        name=model.name,
        source=spec.source,
        format=spec.format,
        type=spec.type,
        base_model=spec.base_model,
        digest=model.digest,
        size_bytes=spec.size_bytes,
    )


def order(
    namespace: str, dataset: str, model: ModelRef = SIM_MODEL, **spec: Any
) -> DispatchedTraining:
    name = f"train-{uuid.uuid4().hex[:6]}"
    fields = {
        "baseModel": model.name,
        "dataset": dataset,
        "output": {"name": f"{name}-lora"},
        "resolution": 64,
        "batchSize": 2,
        "rank": 4,
        "steps": 30,
        "checkpointEverySteps": 10,
        **spec,
    }
    return DispatchedTraining(
        job=JobRef(uid=str(uuid.uuid4()), namespace=namespace, name=name, attempt=1),
        spec=TrainingJobSpec.model_validate(fields),
        seed=7,
        model=model,
        output_bucket=BUCKETS.outputs,
        models_bucket=BUCKETS.models,
    )


def next_attempt(dispatched: DispatchedTraining) -> DispatchedTraining:
    job = dispatched.job.model_copy(update={"attempt": dispatched.job.attempt + 1})
    return dispatched.model_copy(update={"job": job})


def read(s3: Any, uri: str) -> bytes:
    location = S3Location.parse(uri)
    body: bytes = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    return body


def checkpoint_keys(s3: Any, dispatched: DispatchedTraining) -> list[str]:
    job = dispatched.job
    prefix = checkpoints_prefix(job.namespace, job.name, job.uid)
    listed = s3.list_objects_v2(Bucket=BUCKETS.outputs, Prefix=prefix)
    return [item["Key"].removeprefix(prefix) for item in listed.get("Contents", [])]


def in_flight(kubectl: Kubectl, namespace: str, worker: str) -> list[str]:
    """The uids the worker's Lease lists as running (the operator's view of its slots)."""
    lease = kubectl.json("get", "lease", worker, "-n", namespace)
    inventory = json.loads(lease["metadata"]["annotations"][INVENTORY_ANNOTATION])
    return WorkerInventory.model_validate(inventory).jobs_in_flight


def stop_latency(wire: Wire, job: JobRef, worker: str, stop: Message) -> tuple[Any, float]:
    """Publishes a stop order; the attempt's final event and the seconds it took."""
    sent = time.monotonic()
    wire.control(worker, stop)
    final = wire.final(job)
    return final, time.monotonic() - sent


def test_a_training_order_runs_to_succeeded_with_checkpoints_progress_and_its_lora(
    s3: Any, kubectl: Kubectl, module_namespace: str, wire: Wire, sim: Process, dataset: str
) -> None:
    dispatched = order(module_namespace, dataset, validationPrompts=[f"a {NEW_WORD} circle"])
    wire.dispatch(SIM_WORKER, dispatched)
    wire.wait_for_step(dispatched.job, 5)
    assert dispatched.job.uid in in_flight(kubectl, module_namespace, SIM_WORKER)

    succeeded = wire.final(dispatched.job)

    assert isinstance(succeeded, TrainingSucceeded), succeeded
    events = wire.attempt(dispatched.job)
    assert [type(event) for event in events] == [
        TrainingStarted,
        TrainingCheckpointed,
        TrainingCheckpointed,
        TrainingCheckpointed,
        TrainingSucceeded,
    ]
    started = events[0]
    assert isinstance(started, TrainingStarted)
    assert (started.step, started.examples) == (0, EXAMPLES)
    checkpoints = [event for event in events if isinstance(event, TrainingCheckpointed)]
    assert [event.checkpoint.step for event in checkpoints] == [10, 20, 30]
    assert [event.steps_run for event in checkpoints] == [10, 20, 30]
    assert all(len(event.validation_images) == 1 for event in checkpoints)
    read(s3, checkpoints[0].validation_images[0].uri)  # there
    assert (succeeded.step, succeeded.steps_run) == (30, 30)
    lora = read(s3, succeeded.uri)
    assert hashlib.sha256(lora).hexdigest() == succeeded.sha256
    assert len(lora) == succeeded.size_bytes
    assert [image.step for image in succeeded.validation_images] == [30]
    losses = [report.loss for report in wire.progress[dispatched.job.uid]]
    assert len(losses) >= 20
    assert losses[-1] < losses[0]


def test_a_preempted_training_stops_within_a_step_with_a_checkpoint_and_resumes_from_it(
    s3: Any, module_namespace: str, wire: Wire, sim: Process, dataset: str
) -> None:
    dispatched = order(module_namespace, dataset, steps=40)
    wire.dispatch(SIM_WORKER, dispatched)
    seen = wire.wait_for_step(dispatched.job, 13)

    stopped, latency = stop_latency(
        wire, dispatched.job, SIM_WORKER, PreemptTraining(job=dispatched.job)
    )

    print(f"\nsimulated: preempted at step {stopped.step}, {latency:.3f} s publish -> stopped")
    assert isinstance(stopped, TrainingStopped), stopped
    assert stopped.preempted
    assert seen <= stopped.step < 40
    assert latency < SIM_STEP_SECONDS + 2  # the step under way, the checkpoint, the report
    assert stopped.checkpoint is not None
    assert stopped.checkpoint.step == stopped.step
    assert f"{stopped.step:06d}.safetensors" in checkpoint_keys(s3, dispatched)

    resumed = next_attempt(dispatched)
    wire.dispatch(SIM_WORKER, resumed)
    succeeded = wire.final(resumed.job)

    started = wire.attempt(resumed.job)[0]
    assert isinstance(started, TrainingStarted)
    assert started.step == stopped.step
    assert isinstance(succeeded, TrainingSucceeded), succeeded
    assert (succeeded.step, succeeded.steps_run) == (40, 40 - stopped.step)


def test_a_cancelled_training_stops_within_a_step_keeping_its_checkpoints(
    s3: Any, module_namespace: str, wire: Wire, sim: Process, dataset: str
) -> None:
    dispatched = order(module_namespace, dataset, steps=40)
    wire.dispatch(SIM_WORKER, dispatched)
    wire.wait_for_step(dispatched.job, 13)

    cancel = CancelJob(job=dispatched.job, reason="cancelled by the test")
    stopped, latency = stop_latency(wire, dispatched.job, SIM_WORKER, cancel)

    assert isinstance(stopped, TrainingStopped), stopped
    assert not stopped.preempted
    assert latency < SIM_STEP_SECONDS + 2
    assert stopped.checkpoint is not None
    assert checkpoint_keys(s3, dispatched) == [
        "000010.safetensors",
        f"{stopped.step:06d}.safetensors",
    ]


def test_a_dataset_without_captions_fails_the_training_and_is_not_retried(
    s3: Any, module_namespace: str, wire: Wire, sim: Process
) -> None:
    prefix = dataset_prefix(module_namespace, "uncaptioned")
    uri = upload_dataset(s3, BUCKETS.uploads, prefix, shapes_dataset(BLUE, NEW_WORD, 2, 0))
    s3.delete_object(Bucket=BUCKETS.uploads, Key=f"{prefix}0001.txt")
    dispatched = order(module_namespace, uri)
    wire.dispatch(SIM_WORKER, dispatched)

    failed = wire.final(dispatched.job)

    assert isinstance(failed, TrainingFailed), failed
    assert failed.reason == DatasetReason.MISSING_CAPTIONS
    assert "0001.png" in failed.message
    assert not failed.retryable
    assert wire.attempt(dispatched.job) == [failed]


def test_a_draining_worker_preempts_its_training_at_the_next_step(
    platform_of_module: Platform, module_namespace: str, wire: Wire, dataset: str
) -> None:
    worker = platform_of_module.worker(
        "drained",
        sim_training_step_seconds=str(SIM_STEP_SECONDS),
        sim_load_seconds="0",
        training_progress_seconds="0",
    )
    dispatched = order(module_namespace, dataset, steps=100)
    wire.dispatch("drained", dispatched)
    wire.wait_for_step(dispatched.job, 3)

    worker.terminate()
    stopped = wire.final(dispatched.job)

    assert isinstance(stopped, TrainingStopped), stopped
    assert stopped.preempted
    assert stopped.checkpoint is not None
    worker.wait_stopped()


@DIFFUSERS
def test_a_real_training_is_preempted_at_a_step_and_resumes_from_its_checkpoint(
    s3: Any,
    platform_of_module: Platform,
    module_namespace: str,
    wire: Wire,
    dataset: str,
    models: dict[str, RegisteredModel],
) -> None:
    worker = platform_of_module.worker(REAL_WORKER, simulate=False, training_progress_seconds="0")
    dispatched = order(
        module_namespace, dataset, model_ref(models["micro-shapes"]), steps=16,
        checkpointEverySteps=4,
    )  # fmt: skip
    wire.dispatch(REAL_WORKER, dispatched)
    began = time.monotonic()
    seen = wire.wait_for_step(dispatched.job, 6, timeout=WORKER_START + REAL_TIMEOUT)

    stopped, latency = stop_latency(
        wire, dispatched.job, REAL_WORKER, PreemptTraining(job=dispatched.job)
    )

    assert isinstance(stopped, TrainingStopped), (stopped, worker.tail())
    progress = wire.progress[dispatched.job.uid]
    step_seconds = (progress[-1].eta_seconds or 0) / max(16 - progress[-1].step, 1)
    print(
        f"\nreal: preempted at step {stopped.step} (seen {seen}), {latency:.3f} s publish ->"
        f" stopped, ~{step_seconds:.3f} s/step wall, {time.monotonic() - began:.0f} s so far"
    )
    assert stopped.preempted
    assert seen <= stopped.step <= seen + 2
    assert stopped.checkpoint is not None
    assert stopped.checkpoint.step == stopped.step

    resumed = next_attempt(dispatched)
    wire.dispatch(REAL_WORKER, resumed)
    succeeded = wire.final(resumed.job, timeout=REAL_TIMEOUT)

    assert isinstance(succeeded, TrainingSucceeded), (succeeded, worker.tail())
    started = wire.attempt(resumed.job)[0]
    assert isinstance(started, TrainingStarted)
    assert started.step == stopped.step
    assert (succeeded.step, succeeded.steps_run) == (16, 16 - stopped.step)
    assert hashlib.sha256(read(s3, succeeded.uri)).hexdigest() == succeeded.sha256
