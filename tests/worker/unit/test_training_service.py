"""Unit tests of the worker service's training orders with a recording broker and a
scripted trainer that calls its hooks from a thread, as the real one does: the events'
order and queue, why a training stops, stops that overtake their order, duplicates.
tests/worker/test_training_orders.py runs the same through RabbitMQ and MinIO."""

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from diffleet_core.messages import (
    CancelJob,
    DispatchedTraining,
    JobRef,
    Message,
    ModelRef,
    PreemptTraining,
    TrainingCheckpointed,
    TrainingProgress,
    TrainingStarted,
    TrainingStopped,
    TrainingSucceeded,
)
from diffleet_core.queues import Topology
from diffleet_core.resources.training_job import TrainingCheckpoint, TrainingJobSpec
from diffleet_worker.config import WorkerSettings
from diffleet_worker.runner import TrainedFile, TrainingHooks, TrainingOutcome
from diffleet_worker.service import WorkerService
from tests.worker.unit.test_service import Delivery, ScriptedRunner

STEPS = 6


@dataclass
class QueueBroker:
    """Records each publish with where it went."""

    topology: Topology = field(default_factory=Topology)
    published: list[tuple[str, Message]] = field(default_factory=list)
    connected: bool = True

    async def publish_to_queue(self, queue: str, message: Message, message_id: str) -> None:
        self.published.append((queue, message))

    async def publish_to_exchange(self, exchange: str, routing_key: str, message: Message) -> None:
        self.published.append((routing_key, message))

    def to(self, queue: str) -> list[Message]:
        return [message for where, message in self.published if where == queue]


class ScriptedTrainer:
    """Steps in a thread: each step boundary waits for `go` (so a test stops it where it
    wants), a checkpoint every 2 steps and at a stop; a LoRA at the end."""

    def __init__(self) -> None:
        self.go = threading.Semaphore(0)
        self.trained: list[str] = []

    async def train(self, order: DispatchedTraining, hooks: TrainingHooks) -> TrainingOutcome:
        self.trained.append(order.job.uid)
        return await asyncio.to_thread(self._steps, hooks)

    def _steps(self, hooks: TrainingHooks) -> TrainingOutcome:
        hooks.on_start(0, 3)
        for step in range(STEPS):
            self.go.acquire(timeout=10)
            if hooks.should_stop():
                checkpoint = TrainingCheckpoint(step=step, uri=f"s3://out/{step}")
                hooks.on_checkpoint(checkpoint, [])
                return TrainingOutcome(
                    finished=False, step=step, steps_run=step, checkpoint=checkpoint
                )
            hooks.on_progress(step + 1, 1.0 / (step + 1))
            if (step + 1) % 2 == 0:
                hooks.on_checkpoint(TrainingCheckpoint(step=step + 1, uri="s3://out/c"), [])
        lora = TrainedFile(uri="s3://models/l.safetensors", sha256="a" * 64, size_bytes=8)
        return TrainingOutcome(finished=True, step=STEPS, steps_run=STEPS, lora=lora)


def training(uid: str, attempt: int = 1) -> DispatchedTraining:
    spec = {"baseModel": "m", "dataset": "s3://uploads/ns/datasets/d/", "output": {"name": "l"}}
    return DispatchedTraining(
        job=JobRef(uid=uid, namespace="ns", name=f"t-{uid}", attempt=attempt),
        spec=TrainingJobSpec.model_validate(spec | {"steps": STEPS}),
        seed=1,
        model=ModelRef(
            namespace="ns",
            name="m",
            source="s3://models/m",
            format="diffusers",
            type="checkpoint",
            digest="0" * 64,
        ),
        output_bucket="out",
        models_bucket="models",
    )


def worker(trainer: ScriptedTrainer) -> tuple[WorkerService, QueueBroker]:
    broker = QueueBroker()
    settings = WorkerSettings(worker_id="w", training_progress_seconds=0)
    service = WorkerService(settings, broker, ScriptedRunner(set()), trainer)  # type: ignore[arg-type]
    return service, broker


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


def kinds(messages: list[Message]) -> list[str]:
    return [type(message).__name__ for message in messages]


def test_events_go_in_order_to_the_training_results_queue_and_the_order_is_acked_last() -> None:
    trainer = ScriptedTrainer()
    service, broker = worker(trainer)
    delivery = Delivery(training("a").to_bytes())

    async def scenario() -> None:
        running = asyncio.create_task(service.on_dispatch(delivery))  # type: ignore[arg-type]
        await until(lambda: "a" in service.running)
        assert service.inventory().jobs_in_flight == ["a"]
        for _ in range(STEPS):
            trainer.go.release()
        await running

    asyncio.run(scenario())
    events = broker.to(broker.topology.training_results_queue)
    assert kinds(events) == ["TrainingStarted"] + ["TrainingCheckpointed"] * 3 + [
        "TrainingSucceeded"
    ]
    assert [event.steps_run for event in events if isinstance(event, TrainingCheckpointed)] == [
        2,
        4,
        6,
    ]
    assert not broker.to(broker.topology.results_queue)
    progress = broker.to("training.a")
    assert [report.loss for report in progress if isinstance(report, TrainingProgress)] == [
        1.0 / step for step in range(1, STEPS + 1)
    ]
    assert delivery.settled == "ack"
    assert not service.running


def stop_after_two(stops: list[Message], drain: bool = False) -> TrainingStopped:
    """Runs training "a" for two steps, sends `stops` (and drains), returns its stop."""
    trainer = ScriptedTrainer()
    service, broker = worker(trainer)

    async def scenario() -> None:
        delivery = Delivery(training("a").to_bytes())
        running = asyncio.create_task(service.on_dispatch(delivery))  # type: ignore[arg-type]
        trainer.go.release()
        trainer.go.release()
        await until(lambda: len(broker.to("training.a")) == 2)
        for stop in stops:
            await service.on_control(Delivery(stop.to_bytes()))  # type: ignore[arg-type]
        draining = asyncio.create_task(service.drain(grace_seconds=5)) if drain else None
        await asyncio.sleep(0)
        trainer.go.release()  # the next step boundary
        await running
        if draining is not None:
            await draining

    asyncio.run(scenario())
    final = broker.to(broker.topology.training_results_queue)[-1]
    assert isinstance(final, TrainingStopped)
    return final


def test_a_preempted_training_stops_with_a_checkpoint_of_its_step() -> None:
    stopped = stop_after_two([PreemptTraining(job=training("a").job)])
    assert stopped.preempted
    assert stopped.checkpoint is not None
    assert stopped.step == stopped.checkpoint.step == 2


def test_a_cancel_wins_over_a_preemption_and_a_drain_preempts() -> None:
    job = training("a").job
    cancel = CancelJob(job=job, reason="by the user")
    assert not stop_after_two([PreemptTraining(job=job), cancel]).preempted
    assert stop_after_two([], drain=True).preempted


def test_a_preemption_of_another_attempt_does_not_stop_the_training() -> None:
    trainer = ScriptedTrainer()
    service, broker = worker(trainer)

    async def scenario() -> None:
        stale = PreemptTraining(job=training("a", attempt=2).job)
        running = asyncio.create_task(service.on_dispatch(Delivery(training("a").to_bytes())))  # type: ignore[arg-type]
        await until(lambda: "a" in service.running)
        await service.on_control(Delivery(stale.to_bytes()))  # type: ignore[arg-type]
        for _ in range(STEPS):
            trainer.go.release()
        await running

    asyncio.run(scenario())
    final = broker.to(broker.topology.training_results_queue)[-1]
    assert isinstance(final, TrainingSucceeded)


def test_a_stop_that_overtook_its_order_reports_it_stopped_without_running_it() -> None:
    trainer = ScriptedTrainer()
    service, broker = worker(trainer)
    preempted, cancelled = training("p"), training("c")

    async def scenario() -> None:
        await service.on_control(Delivery(PreemptTraining(job=preempted.job).to_bytes()))  # type: ignore[arg-type]
        cancel = CancelJob(job=cancelled.job, reason="by the user")
        await service.on_control(Delivery(cancel.to_bytes()))  # type: ignore[arg-type]
        for order in (preempted, cancelled):
            await service.on_dispatch(Delivery(order.to_bytes()))  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert trainer.trained == []
    stops = broker.to(broker.topology.training_results_queue)
    assert [
        (stop.job.uid, stop.preempted) for stop in stops if isinstance(stop, TrainingStopped)
    ] == [
        ("p", True),
        ("c", False),
    ]


def test_a_redelivered_order_of_a_reported_attempt_is_dropped() -> None:
    trainer = ScriptedTrainer()
    service, broker = worker(trainer)
    for _ in range(STEPS):
        trainer.go.release()
    body = training("a").to_bytes()

    async def scenario() -> None:
        await service.on_dispatch(Delivery(body))  # type: ignore[arg-type]
        again = Delivery(body, redelivered=True)
        await service.on_dispatch(again)  # type: ignore[arg-type]
        assert again.settled == "ack"

    asyncio.run(scenario())
    assert trainer.trained == ["a"]
    started = broker.to(broker.topology.training_results_queue)[0]
    assert isinstance(started, TrainingStarted)
