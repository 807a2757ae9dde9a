"""A simulated worker whose S3 server or RabbitMQ goes away mid-job, through a loopback
TCP proxy (tests/support/tcp_proxy.py) that the test drops and restores: a real network
fault that leaves the shared services up for everyone else.

An S3 outage shorter than the worker's patience is waited out and the job succeeds on
its first attempt; a longer one hands the job back to be requeued (attempts + 1), never
Failed. A RabbitMQ outage mid-job loses no result and runs the job once, and the worker
reports itself not ready while it lasts; so does an API server outage, after which its
Lease is renewed again."""

import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import yaml

from tests.support.platform import (
    Platform,
    Process,
    apply_job,
    free_port,
    job_status,
    register_model,
    wait_for_phase,
)
from tests.support.polling import eventually
from tests.support.stack import Kubectl
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.stack

# Simulated step time that keeps a job running long enough to act on it.
SLOW = {"DIFFLEET_WORKER_SIM_STEP_SECONDS": "0.25"}


def s3_proxy() -> TcpProxy:
    endpoint = urlsplit(os.environ["AWS_ENDPOINT_URL_S3"])
    return TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)


def amqp_proxy() -> tuple[TcpProxy, str]:
    """A proxy in front of RabbitMQ and the AMQP URL that goes through it."""
    url = urlsplit(os.environ.get("DIFFLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5672)
    credentials = url.netloc.rpartition("@")[0]
    return proxy, url._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()


def start(
    kubectl: Kubectl,
    namespace: str,
    platform: Platform,
    environment: dict[str, str],
) -> Process:
    """An operator, the model "m" and one simulated worker with `environment`."""
    operator = platform.operator()
    register_model(kubectl, namespace, "m")
    port = free_port()
    worker = platform.worker(
        "w", environment=environment | {"DIFFLEET_WORKER_METRICS_PORT": str(port)}
    )
    worker.metrics_port = port
    platform.wait_for_workers(operator, "t4", 1)
    return worker


def running(kubectl: Kubectl, namespace: str, job: str) -> dict[str, Any] | None:
    status = job_status(kubectl, namespace, job)
    return status if status.get("phase") == "Running" else None


def log_lines(worker: Process, pattern: str) -> int:
    return len(re.findall(pattern, worker.log.read_text(errors="replace")))


def ready(worker: Process) -> float | None:
    return worker.metric("diffleet_worker_ready", worker="w")


def outputs_under(namespace: str, job: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(
        Bucket="diffleet-outputs", Prefix=f"{namespace}/{job}/"
    )
    return sorted(item["Key"].rpartition("/")[2] for item in listed.get("Contents", []))


def test_an_s3_outage_during_the_upload_is_waited_out_and_the_job_succeeds(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    with s3_proxy() as proxy:
        through = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}"}
        worker = start(kubectl, namespace, platform, through | SLOW)
        apply_job(kubectl, namespace, "upload", model="m", steps=8, batchSize=2)
        eventually(lambda: running(kubectl, namespace, "upload"), timeout=30, what="Running")
        proxy.drop()
        dropped = time.monotonic()

        def outage_outlasted() -> bool:
            # Two retries and 10 s make the outage; each further retry would only wait
            # longer (the backoff doubles up to 8 s) and show nothing more.
            retries = log_lines(worker, r"/upload/.*retrying in")
            return retries >= 2 and time.monotonic() - dropped > 10

        eventually(outage_outlasted, timeout=60, what="the worker retries its upload")
        proxy.restore()
        outage = time.monotonic() - dropped
        status = wait_for_phase(kubectl, namespace, "upload", "Succeeded", timeout=60)
    assert outage > 10
    assert status["attempts"] == 1
    assert len(status["outputs"]) == 2
    assert outputs_under(namespace, "upload") == ["0.png", "1.png"]


def test_an_s3_outage_past_the_patience_requeues_the_job_instead_of_failing_it(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    with s3_proxy() as proxy:
        through = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}"}
        start(kubectl, namespace, platform, through | {"DIFFLEET_WORKER_S3_PATIENCE_SECONDS": "2"})
        proxy.drop()
        apply_job(kubectl, namespace, "patient", model="m", maxRetries=5)
        requeued = eventually(
            lambda: (
                (status := job_status(kubectl, namespace, "patient")).get("attempts", 0) >= 2
                and status
            ),
            timeout=60,
            what="the job requeued for a second attempt",
        )
        proxy.restore()
        status = wait_for_phase(kubectl, namespace, "patient", "Succeeded", timeout=60)
    assert requeued["phase"] != "Failed"
    assert status["attempts"] >= 2
    assert outputs_under(namespace, "patient") == ["0.png"]


def test_a_rabbitmq_outage_mid_job_loses_no_result_and_runs_the_job_once(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    proxy, amqp_url = amqp_proxy()
    with proxy:
        through = {"DIFFLEET_AMQP_URL": amqp_url}
        worker = start(kubectl, namespace, platform, through | SLOW)
        apply_job(kubectl, namespace, "steady", model="m", steps=16)
        eventually(lambda: running(kubectl, namespace, "steady"), timeout=30, what="Running")
        uid = kubectl.json("get", "generationjob", "steady", "-n", namespace)["metadata"]["uid"]
        proxy.drop()
        eventually(lambda: ready(worker) == 0, timeout=30, what="the worker not ready")
        eventually(
            lambda: log_lines(worker, rf"{uid}/1/end not published") >= 1,
            timeout=60,
            what="the worker retries its result while RabbitMQ is away",
        )
        proxy.restore()
        status = wait_for_phase(kubectl, namespace, "steady", "Succeeded", timeout=60)
        eventually(lambda: ready(worker) == 1, timeout=30, what="the worker ready again")
    assert status["attempts"] == 1
    assert outputs_under(namespace, "steady") == ["0.png"]
    assert log_lines(worker, rf"running job {uid} ") == 1


def test_an_api_server_outage_makes_the_worker_not_ready_then_its_lease_renews_again(
    kubectl: Kubectl, namespace: str, platform: Platform, tmp_path: Path
) -> None:
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    with TcpProxy(server.hostname or "127.0.0.1", server.port or 443) as proxy:
        # Same host (the certificate's), the proxy's port.
        through = server._replace(netloc=f"{server.hostname}:{proxy.port}").geturl()
        config["clusters"][0]["cluster"]["server"] = through
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        worker = start(kubectl, namespace, platform, {"KUBECONFIG": str(kubeconfig)})
        eventually(lambda: ready(worker) == 1, timeout=30, what="the worker ready")
        proxy.drop()
        eventually(lambda: ready(worker) == 0, timeout=30, what="the worker not ready")
        proxy.restore()
        eventually(lambda: ready(worker) == 1, timeout=30, what="the worker ready again")
        renewed = renew_time(kubectl, namespace)
        eventually(
            lambda: renew_time(kubectl, namespace) > renewed,
            timeout=30,
            what="the Lease renewed after the outage",
        )
    assert worker.popen.poll() is None


def renew_time(kubectl: Kubectl, namespace: str) -> str:
    lease = kubectl.json("get", "lease", "w", "-n", namespace)
    when: str = lease["spec"]["renewTime"]
    return when


def test_a_worker_started_while_rabbitmq_is_away_comes_up_once_it_is_back(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    proxy, amqp_url = amqp_proxy()
    with proxy:
        proxy.drop()
        operator = platform.operator()
        register_model(kubectl, namespace, "m")
        worker = platform.worker("w", environment={"DIFFLEET_AMQP_URL": amqp_url})
        eventually(
            lambda: log_lines(worker, r"RabbitMQ unreachable") >= 2,
            timeout=30,
            what="the worker waits for RabbitMQ",
        )
        proxy.restore()
        platform.wait_for_workers(operator, "t4", 1)
        apply_job(kubectl, namespace, "late", model="m")
        wait_for_phase(kubectl, namespace, "late", "Succeeded", timeout=60)
    assert worker.popen.poll() is None
