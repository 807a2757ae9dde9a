"""Dispatch benchmark: how fast the operator takes jobs to workers, against the local stack.

1. The operator serves a fresh namespace with W simulated workers (one process,
   `diffleet-worker --simulate --replicas W`, 1 slot each, a few ms per job).
2. N GenerationJobs are created (32 concurrent creates); a watch records, per job, when
   it was created (client clock) and when it was first seen Scheduled or later.
3. Figures: dispatch throughput (jobs/s, first create to last Scheduled), p50/p99
   create-to-Scheduled latency, and API writes per job (from kube-apiserver's
   apiserver_request_total, GenerationJob writes and Event writes separately).
4. For comparison, kube-scheduler binds P pause pods onto the kwok GPU nodes: pods/s,
   with its default client QPS (50, burst 100) and with QPS raised (1000/2000) so the
   API server is the limit.

Needs the stack up without the platform processes (`make up-infra`). Writes
bench/results/dispatch.md. Run: `make bench-dispatch` (N=2000, W=100 by default).
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import struct
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from kubernetes_asyncio import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dispatch.md"
GROUP, VERSION = "diffleet.io", "v1alpha1"
LEFT_QUEUE = {"Scheduled", "Running", "Succeeded"}


@dataclass
class Timeline:
    created: dict[str, float] = field(default_factory=dict)
    scheduled: dict[str, float] = field(default_factory=dict)


async def deadline(probe: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not await probe():
        if time.monotonic() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


def write_counts() -> dict[str, float]:
    """kube-apiserver's write requests so far, for GenerationJobs and for Events."""
    text = subprocess.run(
        ["kubectl", "get", "--raw", "/metrics"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    counts = {"generationjobs": 0.0, "events": 0.0}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        if not any(f'verb="{verb}"' in labels for verb in ("POST", "PATCH", "PUT", "DELETE")):
            continue
        for resource in counts:
            if f'resource="{resource}"' in labels:
                counts[resource] += float(value)
    return counts


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=out)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def register_model(custom: client.CustomObjectsApi, namespace: str) -> None:
    header = json.dumps({"__metadata__": {"bench": namespace}}).encode()
    key = f"bench/{namespace}.safetensors"
    boto3.client("s3").put_object(
        Bucket="diffleet-models", Key=key, Body=struct.pack("<Q", len(header)) + header
    )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelCache",
        "metadata": {"name": "m"},
        "spec": {"source": f"s3://diffleet-models/{key}", "format": "safetensors",
                 "baseModel": "sd15", "vramGiB": 4},
    }  # fmt: skip
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", body)

    async def ready() -> bool:
        mc = await custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelcaches", "m"
        )
        return bool((mc.get("status") or {}).get("phase") == "Ready")

    await deadline(ready, 60, "ModelCache Ready")


async def watch_jobs(custom: client.CustomObjectsApi, namespace: str, seen: Timeline) -> None:
    """Records when each job is first seen past Queued; resumes when the server ends a watch."""
    version = ""
    while True:
        stream = watch.Watch()
        async with stream.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "generationjobs",
            resource_version=version, timeout_seconds=60,
        ) as events:  # fmt: skip
            async for event in events:
                job = event["object"]
                version = job["metadata"]["resourceVersion"]
                phase = (job.get("status") or {}).get("phase")
                name = job["metadata"]["name"]
                if phase in LEFT_QUEUE and name not in seen.scheduled:
                    seen.scheduled[name] = time.monotonic()


async def create_jobs(
    custom: client.CustomObjectsApi, namespace: str, count: int, seen: Timeline
) -> None:
    gate = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        name = f"job-{i:05d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GenerationJob",
            "metadata": {"name": name},
            "spec": {"model": "m", "prompt": "a green triangle", "steps": 1},
        }
        async with gate:
            await custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "generationjobs", body
            )
            seen.created[name] = time.monotonic()

    await asyncio.gather(*(create(i) for i in range(count)))


async def bench_operator(api: client.ApiClient, jobs: int, workers: int) -> dict[str, Any]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    logs = ROOT / ".diffleet" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = {"DIFFLEET_QUEUE_PREFIX": namespace}
    operator = spawn(
        ["diffleet-operator"],
        common | {
            "DIFFLEET_OPERATOR_NAMESPACES": json.dumps([namespace]),
            "DIFFLEET_OPERATOR_FLEET_NAMESPACE": namespace,
            "DIFFLEET_OPERATOR_METRICS_PORT": "0",
            "DIFFLEET_OPERATOR_LIVENESS_ENDPOINT": "",
        },
        logs / f"{namespace}-operator.log",
    )  # fmt: skip
    fleet = spawn(
        ["diffleet-worker", "--simulate", "--replicas", str(workers)],
        common | {
            "DIFFLEET_WORKER_WORKER_ID": "sim",
            "DIFFLEET_WORKER_FLEET_NAMESPACE": namespace,
            "DIFFLEET_WORKER_SIM_STEP_SECONDS": "0.005",
            "DIFFLEET_WORKER_SIM_LOAD_SECONDS": "0",
            "DIFFLEET_WORKER_LEASE_SECONDS": "30",
            "DIFFLEET_WORKER_RENEW_SECONDS": "10",
        },
        logs / f"{namespace}-workers.log",
    )  # fmt: skip
    try:
        await register_model(custom, namespace)
        coordination = client.CoordinationV1Api(api)

        async def fleet_up() -> bool:
            leases = await coordination.list_namespaced_lease(
                namespace, label_selector="diffleet.io/worker=true"
            )
            return len(leases.items) >= workers

        await deadline(fleet_up, 120, f"{workers} workers announced")
        before = write_counts()
        seen = Timeline()
        watcher = asyncio.create_task(watch_jobs(custom, namespace, seen))
        started = time.monotonic()
        await create_jobs(custom, namespace, jobs, seen)

        async def all_scheduled() -> bool:
            return len(seen.scheduled) >= jobs

        await deadline(all_scheduled, 900, f"every job Scheduled ({len(seen.scheduled)} seen)")
        finished = max(seen.scheduled.values())
        watcher.cancel()
        after = write_counts()
        latencies = [seen.scheduled[name] - seen.created[name] for name in seen.created]
        return {
            "jobs": jobs,
            "workers": workers,
            "throughput": jobs / (finished - started),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "job_writes": (after["generationjobs"] - before["generationjobs"]) / jobs,
            "event_writes": (after["events"] - before["events"]) / jobs,
        }
    finally:
        await clean_up(api, namespace)
        for process in (fleet, operator):
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        await core.delete_namespace(namespace)


async def clean_up(api: client.ApiClient, namespace: str) -> None:
    """Deletes the jobs while the operator still runs (it releases their finalizers)."""
    custom = client.CustomObjectsApi(api)
    await custom.delete_collection_namespaced_custom_object(
        GROUP, VERSION, namespace, "generationjobs"
    )

    async def gone() -> bool:
        listed = await custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "generationjobs", limit=1
        )
        return not listed["items"]

    await deadline(gone, 600, "jobs deleted")


async def bench_scheduler(api: client.ApiClient, pods: int) -> float:
    """kube-scheduler binding `pods` pause pods onto the kwok nodes: pods per second."""
    core = client.CoreV1Api(api)
    namespace = f"bench-pods-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    gate = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"p-{i}"),
            spec=client.V1PodSpec(
                node_selector={"type": "kwok"},
                tolerations=[client.V1Toleration(key="nvidia.com/gpu", operator="Exists")],
                containers=[client.V1Container(name="pause", image="registry.k8s.io/pause:3.10")],
            ),
        )
        async with gate:
            await core.create_namespaced_pod(namespace, pod)

    started = time.monotonic()
    await asyncio.gather(*(create(i) for i in range(pods)))

    async def bound() -> bool:
        listed = await core.list_namespaced_pod(namespace)
        return sum(1 for p in listed.items if p.spec.node_name) >= pods

    await deadline(bound, 600, "every pod bound")
    rate = pods / (time.monotonic() - started)
    await core.delete_namespace(namespace)
    return rate


def restart_scheduler(extra_args: str) -> None:
    pid = (ROOT / ".diffleet" / "run" / "kube-scheduler.pid").read_text().strip()
    os.killpg(int(pid), signal.SIGTERM)
    env = {**os.environ, "KUBE_SCHEDULER_EXTRA_ARGS": extra_args}
    while subprocess.run(["kill", "-0", pid], check=False, capture_output=True).returncode == 0:
        time.sleep(0.2)
    subprocess.run([str(ROOT / "hack" / "stack.sh"), "up-infra"], env=env, check=True)


async def run(jobs: int, workers: int, pods: int) -> None:
    await config.load_kube_config()
    async with client.ApiClient() as api:
        operator = await bench_operator(api, jobs, workers)
        default_rate = await bench_scheduler(api, pods)
        restart_scheduler("--kube-api-qps=1000 --kube-api-burst=2000")
        try:
            raised_rate = await bench_scheduler(api, pods)
        finally:
            restart_scheduler("")
    RESULTS.write_text(
        f"""# Dispatch benchmark

Measured by `bench/dispatch.py` on {time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, the
whole local stack (kube-apiserver, etcd, RabbitMQ, the operator and the simulated
fleet) on the same machine.

## Operator: {operator["jobs"]} jobs, {operator["workers"]} simulated workers

| figure | value |
|---|---|
| dispatch throughput (first create to last Scheduled) | {operator["throughput"]:.1f} jobs/s |
| create to Scheduled, p50 | {operator["p50"] * 1000:.0f} ms |
| create to Scheduled, p99 | {operator["p99"] * 1000:.0f} ms |
| API writes per job, GenerationJob (create, status, kopf) | {operator["job_writes"]:.1f} |
| API writes per job, Events | {operator["event_writes"]:.1f} |

The operator's Kubernetes clients (kopf's and kubernetes_asyncio's) have no client-side
rate limit. Dispatch publishes with confirm in its loop; the Scheduled status write runs
beside it (16 in flight).

## kube-scheduler: {pods} pause pods onto the kwok nodes

| scheduler client | pods bound per second |
|---|---|
| default (QPS 50, burst 100) | {default_rate:.1f} |
| raised (QPS 1000, burst 2000) | {raised_rate:.1f} |

Ratio, operator dispatch to kube-scheduler binding: {operator["throughput"] / default_rate:.2f}
(default client), {operator["throughput"] / raised_rate:.2f} (raised).

Reproduce: `make up-infra && make bench-dispatch`.
"""
    )
    print(RESULTS.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--pods", type=int, default=600)
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.workers, args.pods))


if __name__ == "__main__":
    main()
