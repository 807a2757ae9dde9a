"""The platform's own processes in tests: an operator and simulated workers, each isolated
in a test namespace (its own queue prefix, fleet namespace and leader Lease), so no
background process of `make up` ever takes a test's jobs."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests.support.polling import eventually
from tests.support.stack import ROOT, Kubectl

LOG_DIR = ROOT / ".diffleet" / "logs" / "tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sample_name(name: str, **labels: str) -> str:
    """A sample's name as /metrics writes it: `name{key="value",...}`, labels sorted."""
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{selector}}}" if labels else name


@dataclass
class Process:
    """A platform process started by a test; stopped (SIGTERM) or killed (SIGKILL)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample from the process's Prometheus /metrics, None when absent."""
        return self.metrics().get(sample_name(name, **labels))

    def metrics(self) -> dict[str, float]:
        """Every sample of one scrape of the process's /metrics, by its name with labels
        (`sample_name`): samples compared with each other must come from one scrape."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            lines = response.read().decode().splitlines()
        samples = {}
        for line in lines:
            if line and not line.startswith("#"):
                sample, _, value = line.rpartition(" ")
                samples[sample] = float(value)
        return samples

    def stop(self, timeout: float = 30) -> None:
        self.terminate()
        self.wait_stopped(timeout)

    def terminate(self) -> None:
        """SIGTERM, without waiting for the process to end (wait_stopped)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 30) -> None:
        """Waits for the process to end, SIGKILLed past `timeout`."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def spawn(name: str, command: list[str], env: dict[str, str]) -> Process:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    return Process(name, popen, log)


@dataclass
class Platform:
    """Operator and workers for one test namespace (plus any extra job namespaces)."""

    namespace: str
    job_namespaces: list[str]
    processes: list[Process] = field(default_factory=list)
    # The platform's namespace its operators look in after a job's (None: diffleet-system).
    system_namespace: str | None = None

    def common_env(self) -> dict[str, str]:
        return {"DIFFLEET_QUEUE_PREFIX": self.namespace}

    def operator(self, name: str = "operator", **settings: str) -> Process:
        env = self.common_env() | {
            "DIFFLEET_OPERATOR_NAMESPACES": json.dumps(self.job_namespaces),
            "DIFFLEET_OPERATOR_FLEET_NAMESPACE": self.namespace,
            "DIFFLEET_OPERATOR_IDENTITY": f"{self.namespace}-{name}",
            "DIFFLEET_OPERATOR_METRICS_PORT": str(port := free_port()),
            "DIFFLEET_OPERATOR_LIVENESS_ENDPOINT": "",
            "DIFFLEET_OPERATOR_LEADER_LEASE_SECONDS": "4",
            "DIFFLEET_OPERATOR_LEADER_RENEW_SECONDS": "0.5",
            "DIFFLEET_OPERATOR_REQUEUE_BACKOFF_SECONDS": "1",
        }
        env |= {f"DIFFLEET_OPERATOR_{key.upper()}": value for key, value in settings.items()}
        if self.system_namespace is not None:
            env["DIFFLEET_SYSTEM_NAMESPACE"] = self.system_namespace
        process = spawn(f"{self.namespace}-{name}", ["diffleet-operator"], env)
        process.metrics_port = port
        self.processes.append(process)
        return process

    def wait_for_workers(
        self, operator: Process, pool: str, count: int, timeout: float = 30
    ) -> None:
        """Until the operator's fleet inventory holds `count` live workers of `pool`.
        A real worker first imports torch and diffusers: give it a longer `timeout`."""
        eventually(
            lambda: operator.metric("diffleet_workers", pool=pool) == count,
            timeout=timeout,
            what=f"operator sees {count} {pool} worker(s)",
        )

    def worker(
        self,
        worker_id: str,
        *,
        simulate: bool = True,
        environment: dict[str, str] | None = None,
        **settings: str,
    ) -> Process:
        """A worker: simulated timings, or (simulate=False) diffusers on the CPU with its
        own empty model cache and /metrics. `environment` adds process variables beyond
        the worker's settings (an S3 endpoint or AMQP URL through a proxy)."""
        env = self.common_env() | {
            "DIFFLEET_WORKER_WORKER_ID": worker_id,
            "DIFFLEET_WORKER_FLEET_NAMESPACE": self.namespace,
            "DIFFLEET_WORKER_LEASE_SECONDS": "3",
            "DIFFLEET_WORKER_RENEW_SECONDS": "0.5",
            "DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
        }
        port = 0
        if not simulate:
            cache = self.cache_root() / worker_id
            env |= {
                "DIFFLEET_WORKER_CACHE_DIR": str(cache),
                "DIFFLEET_WORKER_METRICS_PORT": str(port := free_port()),
                # One torch thread, and OpenMP threads that sleep instead of spinning:
                # the test's operator, the API server and other workers share 2 cores.
                "DIFFLEET_WORKER_THREADS": "1",
                "OMP_WAIT_POLICY": "PASSIVE",
            }
        env |= {f"DIFFLEET_WORKER_{key.upper()}": value for key, value in settings.items()}
        env |= environment or {}
        command = ["diffleet-worker", "--simulate"] if simulate else ["diffleet-worker"]
        process = spawn(f"{self.namespace}-{worker_id}", command, env)
        process.metrics_port = port
        self.processes.append(process)
        return process

    def cache_root(self) -> Path:
        """Where this platform's real workers keep their warm model caches."""
        return LOG_DIR.parent.parent / "worker-cache" / "tests" / self.namespace

    def stop_all(self) -> None:
        """Stops every process; they shut down side by side, not one after another."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait_stopped()
        shutil.rmtree(self.cache_root(), ignore_errors=True)


def tiny_safetensors(tag: str) -> bytes:
    """A valid (empty) safetensors file whose metadata makes its digest unique."""
    header = json.dumps({"__metadata__": {"tag": tag}}).encode()
    return struct.pack("<Q", len(header)) + header


def register_model(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> str:
    """Uploads a tiny model to S3, creates its ModelCache and returns its digest once Ready."""
    key = f"tests/{namespace}/{name}-{uuid.uuid4().hex[:6]}.safetensors"
    boto3.client("s3").put_object(Bucket="diffleet-models", Key=key, Body=tiny_safetensors(key))
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "ModelCache",
        "metadata": {"name": name},
        "spec": {
            "source": f"s3://diffleet-models/{key}",
            "format": "safetensors",
            "baseModel": "sd15",
            "vramGiB": 4,
        }
        | spec,
    }
    kubectl.apply(json.dumps(body), namespace)

    def ready() -> str | None:
        status = kubectl.json("get", "modelcache", name, "-n", namespace).get("status", {})
        return status.get("digest") if status.get("phase") == "Ready" else None

    return eventually(ready, timeout=60, what=f"ModelCache {name} Ready")


def apply_job(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "GenerationJob",
        "metadata": {"name": name},
        "spec": {"prompt": "a red circle", "steps": 4} | spec,
    }
    kubectl.apply(json.dumps(body), namespace)


def job_manifest(name: str, **spec: Any) -> str:
    """A GenerationJob with only these fields (apply_job adds a prompt and steps; a styled
    job leaves steps to its preset)."""
    body = {"apiVersion": "diffleet.io/v1alpha1", "kind": "GenerationJob"}
    return json.dumps(body | {"metadata": {"name": name}, "spec": spec})


def style_preset(name: str, **spec: Any) -> str:
    """A StylePreset's manifest."""
    body = {"apiVersion": "diffleet.io/v1alpha1", "kind": "StylePreset"}
    return json.dumps(body | {"metadata": {"name": name}, "spec": spec})


def cancel(kubectl: Kubectl, namespace: str, job: str) -> None:
    kubectl.run(
        "patch", "generationjob", job, "-n", namespace, "--type=merge",
        "-p", '{"spec":{"cancel":true}}',
    )  # fmt: skip


def job_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (
        kubectl.json("get", "generationjob", name, "-n", namespace).get("status") or {}
    )
    return status


def wait_for_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = job_status(kubectl, namespace, name)
        return status if status.get("phase") == phase else None

    return eventually(reached, timeout=timeout, what=f"job {name} {phase}")
