"""Faults: lost workers, cancellation, timeouts, operator crashes and fail-over."""

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import boto3

from diffleet_core.messages import DispatchedJob, JobFailed
from tests.operator.injection import (
    REFUSE_LABEL,
    apply_labelled_job,
    idle_worker_lease,
    ready_messages,
    refused_status_writes,
)
from tests.support.platform import (
    Platform,
    Process,
    apply_job,
    cancel,
    job_status,
    register_model,
    wait_for_phase,
)
from tests.support.polling import eventually
from tests.support.stack import Kubectl

# Simulated step time that keeps a job running long enough to act on it.
SLOW_STEP = "0.5"


def worker_jobs(kubectl: Kubectl, namespace: str, worker: str) -> list[str]:
    """The jobs a worker reports in flight on its Lease."""
    lease = kubectl.json("get", "lease", worker, "-n", namespace)
    inventory = json.loads(lease["metadata"]["annotations"]["diffleet.io/inventory"])
    jobs: list[str] = inventory["jobsInFlight"]
    return jobs


def wait_until_idle(kubectl: Kubectl, namespace: str, worker: str) -> None:
    eventually(
        lambda: worker_jobs(kubectl, namespace, worker) == [],
        timeout=30,
        what=f"worker {worker} idle",
    )


def outputs_under(namespace: str, job: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(
        Bucket="diffleet-outputs", Prefix=f"{namespace}/{job}/"
    )
    return [item["Key"] for item in listed.get("Contents", [])]


def test_job_of_a_killed_worker_runs_again_elsewhere(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    register_model(kubectl, namespace, "m")
    workers = {name: platform.worker(name, sim_step_seconds=SLOW_STEP) for name in ("w1", "w2")}
    apply_job(kubectl, namespace, "survivor", model="m", steps=8)
    running = wait_for_phase(kubectl, namespace, "survivor", "Running")
    first = running["worker"]
    workers[first].kill()

    done = wait_for_phase(kubectl, namespace, "survivor", "Succeeded", timeout=90)
    assert done["attempts"] == 2
    assert done["worker"] != first
    events = kubectl.json("get", "events", "-n", namespace)["items"]
    assert any(e["reason"] == "WorkerLost" for e in events)


def test_lost_worker_without_retries_fails_the_job(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    register_model(kubectl, namespace, "m")
    doomed = platform.worker("w1", sim_step_seconds=SLOW_STEP)
    apply_job(kubectl, namespace, "fragile", model="m", steps=8, maxRetries=0)
    wait_for_phase(kubectl, namespace, "fragile", "Running")
    doomed.kill()

    failed = wait_for_phase(kubectl, namespace, "fragile", "Failed", timeout=60)
    assert failed["reason"] == "WorkerLost"
    assert "w1" in failed["message"]


def test_cancel_while_queued_never_runs(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    register_model(kubectl, namespace, "m")
    apply_job(kubectl, namespace, "unwanted", model="m")
    wait_for_phase(kubectl, namespace, "unwanted", "Queued")
    cancel(kubectl, namespace, "unwanted")
    wait_for_phase(kubectl, namespace, "unwanted", "Cancelled")

    platform.worker("w1")
    apply_job(kubectl, namespace, "after", model="m")
    wait_for_phase(kubectl, namespace, "after", "Succeeded")
    status = job_status(kubectl, namespace, "unwanted")
    assert status["phase"] == "Cancelled"
    assert "startedAt" not in status
    assert outputs_under(namespace, "unwanted") == []


def test_cancel_while_running_stops_the_worker(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    register_model(kubectl, namespace, "m")
    platform.worker("w1", sim_step_seconds=SLOW_STEP)
    apply_job(kubectl, namespace, "long", model="m", steps=40)
    wait_for_phase(kubectl, namespace, "long", "Running")
    cancel(kubectl, namespace, "long")

    assert wait_for_phase(kubectl, namespace, "long", "Cancelled")["reason"] == "Cancelled"
    wait_until_idle(kubectl, namespace, "w1")
    assert job_status(kubectl, namespace, "long")["phase"] == "Cancelled"
    assert outputs_under(namespace, "long") == []


def test_delete_cancels_queued_and_running_jobs(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    register_model(kubectl, namespace, "m")
    apply_job(kubectl, namespace, "queued", model="m")
    wait_for_phase(kubectl, namespace, "queued", "Queued")
    kubectl.run("delete", "generationjob", "queued", "-n", namespace, "--timeout=30s")

    platform.worker("w1", sim_step_seconds=SLOW_STEP)
    apply_job(kubectl, namespace, "running", model="m", steps=40)
    wait_for_phase(kubectl, namespace, "running", "Running")
    kubectl.run("delete", "generationjob", "running", "-n", namespace, "--timeout=30s")
    wait_until_idle(kubectl, namespace, "w1")
    assert outputs_under(namespace, "queued") == []
    assert outputs_under(namespace, "running") == []


def test_timeout_fails_the_job_and_stops_it(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    register_model(kubectl, namespace, "m")
    platform.worker("w1", sim_step_seconds=SLOW_STEP)
    apply_job(kubectl, namespace, "slow", model="m", steps=40, timeoutSeconds=3)
    failed = wait_for_phase(kubectl, namespace, "slow", "Failed", timeout=30)
    assert failed["reason"] == "Timeout"
    wait_until_idle(kubectl, namespace, "w1")


def leader(kubectl: Kubectl, namespace: str) -> str | None:
    result = kubectl.run(
        "get", "lease", "diffleet-operator", "-n", namespace, "-o", "json", check=False
    )
    if result.returncode != 0:
        return None
    holder: str | None = json.loads(result.stdout)["spec"].get("holderIdentity")
    return holder


def test_only_one_operator_acts_and_the_other_takes_over(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    first = platform.operator("first")
    eventually(
        lambda: leader(kubectl, namespace) == f"{namespace}-first", timeout=30, what="first leads"
    )
    second = platform.operator("second")
    register_model(kubectl, namespace, "m")
    platform.worker("w1")
    apply_job(kubectl, namespace, "before", model="m")
    wait_for_phase(kubectl, namespace, "before", "Succeeded")
    assert leader(kubectl, namespace) == f"{namespace}-first"
    assert "standing by" in second.log.read_text()
    assert "Handler" not in second.log.read_text()

    first.kill()
    eventually(
        lambda: leader(kubectl, namespace) == f"{namespace}-second", timeout=30, what="second leads"
    )
    apply_job(kubectl, namespace, "after", model="m")
    wait_for_phase(kubectl, namespace, "after", "Succeeded", timeout=60)


def job_list(namespace: str, count: int) -> str:
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GenerationJob",
            "metadata": {"name": f"stream-{i:03d}", "namespace": namespace},
            "spec": {"model": "m", "prompt": "a blue square", "steps": 2},
        }
        for i in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def succeeded_count(kubectl: Kubectl, namespace: str) -> int:
    jobs = kubectl.json("get", "generationjobs", "-n", namespace)["items"]
    return sum(1 for job in jobs if (job.get("status") or {}).get("phase") == "Succeeded")


def runs_per_job(workers: list[Process]) -> dict[str, int]:
    runs: dict[str, int] = {}
    for worker in workers:
        for line in worker.log.read_text().splitlines():
            if "running job" in line:
                uid = line.rsplit("running job ", 1)[1].split()[0]
                runs[uid] = runs.get(uid, 0) + 1
    return runs


def test_operator_killed_mid_stream_loses_and_duplicates_nothing(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """The leader is killed a quarter into a stream of jobs (dozens still to admit,
    dispatch or record) and a new one takes over: every job runs once, with one output."""
    total = 80
    operator = platform.operator("first")
    register_model(kubectl, namespace, "m")
    workers = [
        platform.worker(f"w{i}", concurrency="2", sim_step_seconds="0.05", sim_load_seconds="0")
        for i in range(4)
    ]
    kubectl.apply(job_list(namespace, total), namespace)
    eventually(lambda: succeeded_count(kubectl, namespace) >= 20, timeout=120, what="20 done")
    operator.kill()
    assert succeeded_count(kubectl, namespace) < total / 2  # killed mid-stream
    platform.operator("second")

    eventually(
        lambda: succeeded_count(kubectl, namespace) == total,
        timeout=300,
        interval=1,
        what=f"all {total} jobs Succeeded",
    )
    jobs = kubectl.json("get", "generationjobs", "-n", namespace)["items"]
    for job in jobs:
        status = job["status"]
        assert len(status["outputs"]) == 1, job["metadata"]["name"]
        assert len(outputs_under(namespace, job["metadata"]["name"])) == 1
    runs = runs_per_job(workers)
    assert len(runs) == total
    assert max(runs.values()) == 1, {uid: n for uid, n in runs.items() if n > 1}


def test_a_leader_that_loses_its_lease_stands_by_and_leads_again(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """The Lease is taken from the leader (its holder patched to one that never renews):
    the leader stops its loops and stands by without exiting, and leads again later."""
    first = platform.operator("first")
    eventually(
        lambda: leader(kubectl, namespace) == f"{namespace}-first", timeout=30, what="first leads"
    )
    second = platform.operator("second")
    eventually(lambda: "standing by" in second.log.read_text(), timeout=30, what="second waits")
    kubectl.run(
        "patch", "lease", "diffleet-operator", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"holderIdentity": "intruder"}}',
    )  # fmt: skip
    eventually(
        lambda: "leadership lost" in first.log.read_text(), timeout=30, what="first stands by"
    )
    # The intruder never renews: after one lease duration an operator takes over.
    eventually(
        lambda: leader(kubectl, namespace) in (f"{namespace}-first", f"{namespace}-second"),
        timeout=30,
        what="an operator leads again",
    )
    if leader(kubectl, namespace) == f"{namespace}-second":
        second.stop()  # releases the Lease
    eventually(
        lambda: leader(kubectl, namespace) == f"{namespace}-first",
        timeout=30,
        what="first leads again",
    )
    register_model(kubectl, namespace, "m")
    platform.worker("w1")
    apply_job(kubectl, namespace, "after", model="m")
    wait_for_phase(kubectl, namespace, "after", "Succeeded", timeout=60)
    assert first.popen.poll() is None
    assert first.log.read_text().count("leading: holding Lease") == 2


def test_the_workers_gauge_drops_to_zero_when_its_pool_empties(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = platform.operator()
    worker = platform.worker("w1")
    platform.wait_for_workers(operator, "t4", 1)
    worker.kill()
    platform.wait_for_workers(operator, "t4", 0, timeout=30)


def test_an_admission_is_acknowledged_only_once_scheduled_is_written(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """While the API server refuses the Scheduled write (403: retried), the admission
    message stays unacknowledged: an operator killed then leaves it in its queue, and
    the next one writes Scheduled before acknowledging it."""
    tenant_queue = f"{namespace}.jobs.free.{namespace}"
    idle_worker_lease(kubectl, namespace, "idle")
    apply_labelled_job(kubectl, namespace, "held-up", {REFUSE_LABEL: "Scheduled"}, model="m")
    with refused_status_writes(kubectl, namespace, probe_job="held-up", reason="Forbidden"):
        first = platform.operator("first")
        register_model(kubectl, namespace, "m")
        eventually(
            lambda: ready_messages(f"{namespace}.worker.idle") == 1,
            timeout=60,
            what="the job dispatched to the idle worker",
        )
        eventually(
            lambda: "Scheduled not written" in first.log.read_text(),
            timeout=30,
            what="the Scheduled write refused and retried",
        )
        assert job_status(kubectl, namespace, "held-up").get("phase") != "Scheduled"
        first.kill()
        eventually(
            lambda: ready_messages(tenant_queue) == 1,
            timeout=30,
            what="the unacknowledged admission back in its queue",
        )
    platform.operator("second")
    wait_for_phase(kubectl, namespace, "held-up", "Scheduled", timeout=60)
    eventually(lambda: ready_messages(tenant_queue) == 0, timeout=30, what="the admission acked")


async def answer_with_retryable_failures(
    namespace: str, worker_id: str, failures: int
) -> list[float]:
    """Plays the worker: answers each dispatch with a retryable failure at once, and
    returns the seconds from each failure to the next dispatch (the requeue delays)."""
    connection = await aio_pika.connect(os.environ["DIFFLEET_AMQP_URL"], timeout=10)
    gaps: list[float] = []
    failed_at: float | None = None
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"{namespace}.worker.{worker_id}", durable=True)
        async with queue.iterator() as orders:
            for dispatch in range(1, failures + 1):
                try:
                    message = await asyncio.wait_for(anext(orders), timeout=60)
                except TimeoutError:
                    raise AssertionError(f"dispatch {dispatch} not received in 60s") from None
                if failed_at is not None:
                    gaps.append(time.monotonic() - failed_at)
                order = DispatchedJob.model_validate_json(message.body)
                await message.ack()
                failure = JobFailed(
                    job=order.job,
                    worker=worker_id,
                    at=datetime.now(UTC),
                    reason="OutOfMemory",
                    message="simulated",
                    retryable=True,
                )
                await channel.default_exchange.publish(
                    aio_pika.Message(failure.to_bytes()), routing_key=f"{namespace}.results"
                )
                failed_at = time.monotonic()
    return gaps


def test_requeue_delays_double_up_to_the_maximum(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """requeue_backoff_seconds 1, requeue_backoff_max_seconds 2: a job failed (retryable)
    three times comes back through RabbitMQ's delay queues after 1, 2 and 2 s (doubled,
    then held at the maximum), and fails for good after its fourth attempt (maxRetries 3)."""
    idle_worker_lease(kubectl, namespace, "player")
    platform.operator(requeue_backoff_seconds="1", requeue_backoff_max_seconds="2")
    register_model(kubectl, namespace, "m")
    apply_job(kubectl, namespace, "bouncing", model="m", maxRetries=3)

    gaps = asyncio.run(answer_with_retryable_failures(namespace, "player", failures=4))
    delays = [1, 2, 2]
    assert len(gaps) == len(delays)
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay - 0.1 <= gap < delay + 1.5, (gaps, delays)
    failed = wait_for_phase(kubectl, namespace, "bouncing", "Failed", timeout=30)
    assert failed["attempts"] == 4
    assert failed["message"] == "simulated; gave up after 4 attempt(s)"
    requeues = sorted(
        event["message"]
        for event in kubectl.json("get", "events", "-n", namespace)["items"]
        if event["reason"] == "OutOfMemory" and event["involvedObject"]["name"] == "bouncing"
    )
    assert requeues[:3] == [
        "simulated; attempt 2 in 1s",
        "simulated; attempt 3 in 2s",
        "simulated; attempt 4 in 2s",
    ]
