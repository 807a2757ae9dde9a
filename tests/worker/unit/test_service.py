"""Unit tests of the worker service's job loop with a recording broker and a scripted
runner: a bad order never stops it, and cancel orders are remembered within a bound.
tests/worker/test_generation.py runs the same through RabbitMQ and a diffusers worker."""

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiormq.exceptions import ChannelInvalidStateError

from diffleet_core.messages import (
    CancelJob,
    DispatchedJob,
    JobFailed,
    JobRef,
    JobSucceeded,
    Message,
    ModelRef,
)
from diffleet_core.queues import Topology
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_worker import metrics
from diffleet_worker.cancels import PendingCancels
from diffleet_worker.config import WorkerSettings
from diffleet_worker.runner import RunResult, StepCallback
from diffleet_worker.service import WorkerService


@dataclass
class RecordingBroker:
    topology: Topology = field(default_factory=Topology)
    results: list[Message] = field(default_factory=list)
    connected: bool = True

    async def publish_to_queue(self, queue: str, message: Message, message_id: str) -> None:
        self.results.append(message)

    async def publish_to_exchange(self, exchange: str, routing_key: str, message: Message) -> None:
        pass


@dataclass
class Delivery:
    """An incoming message that records how it was settled."""

    body: bytes
    redelivered: bool = False
    settled: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    async def ack(self) -> None:
        self.settled = "ack"

    async def nack(self, requeue: bool = True) -> None:
        self.settled = "requeued" if requeue else "dropped"

    async def reject(self, requeue: bool = False) -> None:
        self.settled = "requeued" if requeue else "dropped"


class ScriptedRunner:
    """Raises for the job uids in `raising`, succeeds for the others."""

    def __init__(self, raising: set[str]) -> None:
        self.raising = raising
        self.ran: list[str] = []

    def hot_models(self) -> list[str]:
        return []

    def warm_models(self) -> list[str]:
        return []

    def hot_slots(self) -> int | None:
        return None

    async def run(
        self, order: DispatchedJob, cancelled: asyncio.Event, on_step: StepCallback
    ) -> RunResult:
        self.ran.append(order.job.uid)
        if order.job.uid in self.raising:
            raise KeyError("unet.conv_in.weight")
        return RunResult(outputs=[], model_digest=order.model.digest, lora_digests={})

    async def warm(self, model: ModelRef) -> None:
        pass


def job(uid: str) -> JobRef:
    return JobRef(uid=uid, namespace="ns", name=f"job-{uid}", attempt=1)


def dispatched(uid: str) -> bytes:
    return DispatchedJob(
        job=job(uid),
        spec=GenerationJobSpec.model_validate({"model": "m", "prompt": "a red circle"}),
        seed=1,
        model=ModelRef(
            namespace="ns",
            name="m",
            source="s3://models/m",
            format="diffusers",
            type="checkpoint",
            base_model="sd15",
            digest="0" * 64,
        ),
        output_bucket="out",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    ).to_bytes()


def service(
    runner: ScriptedRunner, broker_patience: float = 60
) -> tuple[WorkerService, RecordingBroker]:
    broker = RecordingBroker()
    settings = WorkerSettings(worker_id="w", broker_patience_seconds=broker_patience)
    worker = WorkerService(settings, broker, runner)  # type: ignore[arg-type]
    return worker, broker


def quarantined(reason: str) -> float:
    value = metrics.JOBS_QUARANTINED.labels(reason)._value.get()
    return float(value)


def ends(broker: RecordingBroker) -> dict[str, Message]:
    return {
        result.job.uid: result
        for result in broker.results
        if isinstance(result, JobSucceeded | JobFailed)
    }


def test_unreadable_orders_and_a_raising_run_are_set_aside_and_the_next_job_runs() -> None:
    runner = ScriptedRunner(raising={"raises"})
    worker, broker = service(runner)
    named = json.loads(dispatched("named"))
    named["spec"]["steps"] = "many"
    deliveries = [
        Delivery(b"\xff not json"),
        Delivery(json.dumps(named).encode()),
        Delivery(dispatched("raises")),
        Delivery(dispatched("next")),
    ]
    before = {reason: quarantined(reason) for reason in ("unreadable", "unexpected")}

    async def handle_all() -> None:
        for delivery in deliveries:
            await worker.on_dispatch(delivery)  # type: ignore[arg-type]

    asyncio.run(handle_all())

    assert [delivery.settled for delivery in deliveries] == ["dropped", "ack", "ack", "ack"]
    assert runner.ran == ["raises", "next"]
    results = ends(broker)
    unreadable, raised = results["named"], results["raises"]
    assert isinstance(unreadable, JobFailed)
    assert unreadable.reason == Reason.INVALID_SPEC
    assert "spec.steps" in unreadable.message
    assert isinstance(raised, JobFailed)
    assert raised.reason == Reason.FAILED
    assert "KeyError" in raised.message
    assert "unet.conv_in.weight" in raised.message
    assert isinstance(results["next"], JobSucceeded)
    assert quarantined("unreadable") - before["unreadable"] == 2
    assert quarantined("unexpected") - before["unexpected"] == 1


def test_a_result_that_cannot_be_published_is_handed_back_once_then_dropped() -> None:
    worker, broker = service(ScriptedRunner(raising=set()), broker_patience=0)

    async def refuse(queue: str, message: Message, message_id: str) -> None:
        raise ConnectionError("channel closed")

    broker.publish_to_queue = refuse  # type: ignore[method-assign]
    first, second = Delivery(dispatched("j")), Delivery(dispatched("j"), redelivered=True)
    before = quarantined("unreportable")

    async def deliver_twice() -> None:
        await worker.on_dispatch(first)  # type: ignore[arg-type]
        await worker.on_dispatch(second)  # type: ignore[arg-type]

    asyncio.run(deliver_twice())
    assert (first.settled, second.settled) == ("requeued", "dropped")
    assert quarantined("unreportable") - before == 1


def test_a_publish_during_a_broker_outage_is_retried_and_the_job_runs_once() -> None:
    runner = ScriptedRunner(raising=set())
    worker, broker = service(runner)
    publish = broker.publish_to_queue
    outage = [ConnectionError("connection reset")] * 3

    async def flaky(queue: str, message: Message, message_id: str) -> None:
        if outage:
            raise outage.pop()
        await publish(queue, message, message_id)

    broker.publish_to_queue = flaky  # type: ignore[method-assign]
    first = LostAck(dispatched("j"))
    redelivered = Delivery(dispatched("j"), redelivered=True)

    async def deliver_twice() -> None:
        await worker.on_dispatch(first)  # type: ignore[arg-type]
        await worker.on_dispatch(redelivered)  # type: ignore[arg-type]

    asyncio.run(deliver_twice())
    assert isinstance(ends(broker)["j"], JobSucceeded)
    assert len(broker.results) == 2  # JobStarted and JobSucceeded, once each
    assert runner.ran == ["j"]
    assert redelivered.settled == "ack"


@dataclass
class LostAck(Delivery):
    """A delivery whose channel died with the broker: settling it raises."""

    async def ack(self) -> None:
        raise ChannelInvalidStateError("No active transport in channel")


def test_a_cancel_that_overtakes_its_dispatch_drops_the_job() -> None:
    runner = ScriptedRunner(raising=set())
    worker, _ = service(runner)
    worker.cancel(CancelJob(job=job("early"), reason="Cancelled"))
    delivery = Delivery(dispatched("early"))
    asyncio.run(worker.on_dispatch(delivery))  # type: ignore[arg-type]
    assert (delivery.settled, runner.ran, len(worker.cancels)) == ("ack", [], 0)


def test_pending_cancels_keep_only_the_latest_within_their_capacity() -> None:
    cancels = PendingCancels(capacity=3)
    for uid in ("a", "b", "c", "d", "e"):
        cancels.add(uid)
    assert len(cancels) == 3
    assert not cancels.take("a")
    assert not cancels.take("b")
    cancels.add("c")  # a repeated order counts as the newest
    cancels.add("f")
    assert [cancels.take(uid) for uid in ("d", "c", "e", "f")] == [False, True, True, True]
    assert len(cancels) == 0
    assert not cancels.take("c")


def test_cancels_for_unknown_jobs_stay_bounded_in_the_service() -> None:
    worker, _ = service(ScriptedRunner(raising=set()))
    for index in range(5000):
        worker.cancel(CancelJob(job=job(f"gone-{index}"), reason="Cancelled"))
    assert len(worker.cancels) == worker.cancels.capacity < 5000


def test_a_diffusers_worker_refuses_a_concurrency_it_would_not_run() -> None:
    worker = Path(sys.executable).with_name("diffleet-worker")
    env = {**os.environ, "DIFFLEET_WORKER_CONCURRENCY": "2"}
    refused = subprocess.run([str(worker)], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "DIFFLEET_WORKER_CONCURRENCY above 1 needs --simulate" in refused.stderr
