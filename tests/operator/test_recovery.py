"""The operator recovers by itself from a RabbitMQ outage. The operator reaches RabbitMQ
through a loopback TCP proxy (tests/support/tcp_proxy.py) that the test drops (every
connection closed, new ones refused) and restores: a real network fault that leaves the
shared RabbitMQ, and the workers' connections to it, alone."""

import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from urllib.parse import urlsplit

import pytest

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

# How long RabbitMQ stays unreachable: longer than a few reconnect attempts.
OUTAGE_SECONDS = 6
JOBS_PER_STAGE = 4


def proxied_amqp() -> tuple[TcpProxy, str]:
    """A proxy in front of RabbitMQ and the AMQP URL that goes through it."""
    url = urlsplit(os.environ["DIFFLEET_AMQP_URL"])
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5672)
    credentials = url.netloc.rpartition("@")[0]
    return proxy, url._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()


def readiness(port: int) -> dict[str, bool]:
    """The operator's /readyz report, whatever its status code."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            report: dict[str, bool] = json.load(response)
    except urllib.error.HTTPError as error:
        report = json.load(error)
    return report


def runs_on_workers(kubectl: Kubectl, namespace: str, workers: list[Process]) -> Counter[str]:
    """How many times the workers ran each job (their "running job <uid>" log lines)."""
    jobs = kubectl.json("get", "generationjobs", "-n", namespace)["items"]
    names = {job["metadata"]["uid"]: job["metadata"]["name"] for job in jobs}
    runs: Counter[str] = Counter()
    for worker in workers:
        for line in worker.log.read_text().splitlines():
            if line[:1] != "{":
                continue
            words = json.loads(line)["message"].split()
            if words[:2] == ["running", "job"] and words[2] in names:
                runs[names[words[2]]] += 1
    return runs


def test_jobs_before_during_and_after_a_rabbitmq_outage_all_succeed_once(
    kubectl: Kubectl, namespace: str, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, url = proxied_amqp()
    with proxy:
        with monkeypatch.context() as only_the_operator:
            only_the_operator.setenv("DIFFLEET_AMQP_URL", url)
            operator = platform.operator(readiness_port=str(port := free_port()))
        register_model(kubectl, namespace, "m")
        eventually(lambda: readiness(port)["ready"], timeout=30, what="operator ready")
        workers = [platform.worker(worker_id, sim_step_seconds="0.1") for worker_id in ("w1", "w2")]
        platform.wait_for_workers(operator, "t4", 2, timeout=60)

        def submit(stage: str) -> list[str]:
            names = [f"{stage}-{i}" for i in range(JOBS_PER_STAGE)]
            for name in names:
                apply_job(kubectl, namespace, name, model="m", steps=8)
            return names

        before = submit("before")
        # Running, or past it already: a job's transitions within the status writer's
        # window come in one write.
        eventually(
            lambda: job_status(kubectl, namespace, before[0]).get("startedAt"),
            timeout=60,
            what=f"job {before[0]} started",
        )
        proxy.drop()
        during = submit("during")
        eventually(
            lambda: readiness(port) == {"apiServer": True, "leading": True, "rabbitmq": False,
                                        "ready": False},
            timeout=10,
            what="operator not ready without RabbitMQ",
        )  # fmt: skip
        time.sleep(OUTAGE_SECONDS)  # the fault's length, not a wait for state
        proxy.restore()
        eventually(lambda: readiness(port)["ready"], timeout=30, what="operator ready again")
        after = submit("after")

        for name in before + during + after:
            done = wait_for_phase(kubectl, namespace, name, "Succeeded", timeout=120)
            assert done["attempts"] == 1, name
            assert len(done["outputs"]) == 1, name
        runs = runs_on_workers(kubectl, namespace, workers)
        assert {name: runs[name] for name in before + during + after} == {
            name: 1 for name in before + during + after
        }
        assert job_status(kubectl, namespace, before[0])["phase"] == "Succeeded"


def test_an_operator_started_while_rabbitmq_is_unreachable_leads_once_it_is_back(
    kubectl: Kubectl, namespace: str, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader that cannot connect releases its Lease and tries again (it once exited)."""
    proxy, url = proxied_amqp()
    with proxy:
        proxy.drop()
        with monkeypatch.context() as only_the_operator:
            only_the_operator.setenv("DIFFLEET_AMQP_URL", url)
            operator = platform.operator()
        eventually(
            lambda: "RabbitMQ unreachable" in operator.log.read_text(),
            timeout=60,
            what="the operator finding RabbitMQ unreachable",
        )
        assert operator.popen.poll() is None, operator.tail()
        proxy.restore()
        register_model(kubectl, namespace, "m")
        platform.worker("w1", sim_step_seconds="0.1")
        apply_job(kubectl, namespace, "waits", model="m", steps=4)
        done = wait_for_phase(kubectl, namespace, "waits", "Succeeded", timeout=120)
        assert done["attempts"] == 1
