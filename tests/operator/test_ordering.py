"""Phase writes are monotonic: a report that arrives late never moves a job back."""

import asyncio
import os
from datetime import UTC, datetime

import aio_pika

from diffleet_core.messages import DispatchedJob, JobStarted, JobSucceeded, WorkerEvent
from diffleet_core.resources.generation_job import JobOutput
from tests.operator.injection import idle_worker_lease
from tests.support.platform import Platform, apply_job, job_status, register_model, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import Kubectl


async def take_dispatched(queue: str) -> DispatchedJob:
    """The one job dispatched to a worker queue, taken off it."""
    connection = await aio_pika.connect(os.environ["DIFFLEET_AMQP_URL"], timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        message = await declared.get(timeout=10)
        await message.ack()
        return DispatchedJob.model_validate_json(message.body)


async def report(results_queue: str, *events: WorkerEvent) -> None:
    """Publishes the reports to the results queue in order, each confirmed."""
    connection = await aio_pika.connect(os.environ["DIFFLEET_AMQP_URL"], timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for event in events:
            message = aio_pika.Message(
                event.to_bytes(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await channel.default_exchange.publish(message, routing_key=results_queue, timeout=10)


def test_a_started_report_after_succeeded_leaves_the_job_succeeded(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """The chaos run's defect: a worker's "started" delivered again after its "succeeded"
    (a redelivery after a broker restart) wrote Running over Succeeded. Both reports go
    to the real results queue back to back; the late one is counted stale and dropped."""
    idle_worker_lease(kubectl, namespace, "idle")
    operator = platform.operator()
    register_model(kubectl, namespace, "m")
    apply_job(kubectl, namespace, "late", model="m")
    wait_for_phase(kubectl, namespace, "late", "Scheduled")
    order = asyncio.run(take_dispatched(f"{namespace}.worker.idle"))
    now = datetime.now(UTC)
    output = JobOutput(uri=f"s3://diffleet-outputs/{namespace}/late/0.png", format="png",
                       sha256="0" * 64, width=64, height=64)  # fmt: skip
    succeeded = JobSucceeded(
        job=order.job, worker="idle", at=now, outputs=[output], model_digest="sha256:" + "1" * 64
    )
    started = JobStarted(job=order.job, worker="idle", at=now)
    asyncio.run(report(f"{namespace}.results", succeeded, started))

    wait_for_phase(kubectl, namespace, "late", "Succeeded")
    eventually(
        lambda: (operator.metric("diffleet_stale_reports_total") or 0) >= 1,
        timeout=30,
        what="the late started report dropped",
    )
    final = job_status(kubectl, namespace, "late")
    assert final["phase"] == "Succeeded"
    assert final["completedAt"]
    assert [o["uri"] for o in final["outputs"]] == [output.uri]
    complete = [c for c in final["conditions"] if c["type"] == "Complete"]
    assert [(c["status"], c["reason"]) for c in complete] == [("True", "Succeeded")]
