"""Dispatch benchmark: how fast the operator takes jobs to workers, against the local stack.

1. The operator serves a fresh namespace with W simulated workers (one process,
   `diffleet-worker --simulate --replicas W`), in two fleets: *capacity* (enough slots
   for every job, jobs that outlast the measurement: like pause pods on kwok nodes) and
   *churn* (1 slot per worker, jobs of a few ms: dispatch waits for completions).
2. N GenerationJobs are created (32 concurrent creates); a watch records, per job, when
   it was created (client clock), when it was first seen Scheduled or later, and its
   resource versions until then (its writes).
3. Figures: dispatch throughput (jobs/s, first create to last Scheduled), p50/p99
   create-to-Scheduled latency, and API writes per job (from the watch, and from
   kube-apiserver's apiserver_request_total for GenerationJobs and Events).
4. For comparison, kube-scheduler binds P pause pods onto the kwok GPU nodes: pods/s,
   with its default client QPS (50, burst 100) and with QPS raised (1000/2000) so the
   API server is the limit.

Needs the stack up without the platform processes (`make up-infra`). Writes
bench/results/dispatch.md, with the machine's load averages (other engineers' tests
share it). Run: `make bench-dispatch` (N=2000, W=100 by default).
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dispatch.md"
GROUP, VERSION = "diffleet.io", "v1alpha1"
LEFT_QUEUE = {"Scheduled", "Running", "Succeeded"}
FINISHED = {"Succeeded", "Failed"}
# kube-scheduler's client QPS and burst when the API server, not the client, is the limit.
RAISED_QPS, RAISED_BURST = 1000, 2000


@dataclass
class Timeline:
    created: dict[str, float] = field(default_factory=dict)
    scheduled: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)  # Succeeded or Failed
    # Versions of each job seen until it finished: its writes from create to the end.
    lifetime: dict[str, set[str]] = field(default_factory=dict)
    # Versions of each job seen on the watch until it was Scheduled: its writes by then.
    versions: dict[str, set[str]] = field(default_factory=dict)


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def apiserver_pid() -> int:
    return int((ROOT / ".diffleet" / "run" / "kube-apiserver.pid").read_text().strip())


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=out)


def spawn_operator(
    namespace: str, log: Path, job_namespaces: Sequence[str] = (), **settings: str
) -> subprocess.Popen[bytes]:
    """The operator from this tree serving a benchmark: `namespace` is its queue prefix
    and fleet namespace, `job_namespaces` (default: that one) the namespaces it serves;
    `settings` are DIFFLEET_OPERATOR_<NAME> values."""
    env = {
        "DIFFLEET_QUEUE_PREFIX": namespace,
        "DIFFLEET_OPERATOR_NAMESPACES": json.dumps(list(job_namespaces) or [namespace]),
        "DIFFLEET_OPERATOR_FLEET_NAMESPACE": namespace,
        "DIFFLEET_OPERATOR_METRICS_PORT": "0",
        "DIFFLEET_OPERATOR_LIVENESS_ENDPOINT": "",
    }
    env |= {f"DIFFLEET_OPERATOR_{name.upper()}": value for name, value in settings.items()}
    return spawn(["diffleet-operator"], env, log)


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
                if name not in seen.scheduled:
                    seen.versions.setdefault(name, set()).add(version)
                if name not in seen.finished:
                    seen.lifetime.setdefault(name, set()).add(version)
                if phase in LEFT_QUEUE and name not in seen.scheduled:
                    seen.scheduled[name] = time.monotonic()
                if phase in FINISHED and name not in seen.finished:
                    seen.finished[name] = time.monotonic()


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


@dataclass(frozen=True)
class Scenario:
    """How the simulated fleet runs the jobs."""

    name: str
    slots: int  # jobs per worker at once
    job_seconds: float  # how long a job runs


async def bench_operator(
    api: client.ApiClient, jobs: int, workers: int, scenario: Scenario
) -> dict[str, Any]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    logs = ROOT / ".diffleet" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = {"DIFFLEET_QUEUE_PREFIX": namespace}
    operator = spawn_operator(namespace, logs / f"{namespace}-operator.log")
    fleet = spawn(
        ["diffleet-worker", "--simulate", "--replicas", str(workers)],
        common | {
            "DIFFLEET_WORKER_WORKER_ID": "sim",
            "DIFFLEET_WORKER_FLEET_NAMESPACE": namespace,
            "DIFFLEET_WORKER_CONCURRENCY": str(scenario.slots),
            "DIFFLEET_WORKER_SIM_STEP_SECONDS": str(scenario.job_seconds),
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
        cpu_before = cpu_seconds(operator.pid), cpu_seconds(apiserver_pid())
        seen = Timeline()
        watcher = asyncio.create_task(watch_jobs(custom, namespace, seen))
        started = time.monotonic()
        await create_jobs(custom, namespace, jobs, seen)
        all_created = time.monotonic()

        async def all_scheduled() -> bool:
            return len(seen.scheduled) >= jobs

        await deadline(all_scheduled, 900, f"every job Scheduled ({len(seen.scheduled)} seen)")
        finished = max(seen.scheduled.values())
        cpu_after = cpu_seconds(operator.pid), cpu_seconds(apiserver_pid())
        watcher.cancel()
        after = write_counts()
        latencies = [seen.scheduled[name] - seen.created[name] for name in seen.created]
        return {
            "scenario": scenario,
            "jobs": jobs,
            "workers": workers,
            "throughput": jobs / (finished - started),
            "create_rate": jobs / (all_created - started),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "writes_to_scheduled": statistics.mean(len(v) for v in seen.versions.values()),
            "job_writes": (after["generationjobs"] - before["generationjobs"]) / jobs,
            "event_writes": (after["events"] - before["events"]) / jobs,
            "operator_cpu_ms": (cpu_after[0] - cpu_before[0]) * 1000 / jobs,
            "apiserver_cpu_ms": (cpu_after[1] - cpu_before[1]) * 1000 / jobs,
        }
    finally:
        await clean_up(api, namespace)
        for process in (fleet, operator):
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        await core.delete_namespace(namespace)


async def clean_up(api: client.ApiClient, namespace: str) -> None:
    """Deletes the jobs while the operator still runs (it releases their finalizers). A
    deletion of the whole collection may outlast the API server's request timeout on a
    loaded machine: it is asked again until no job is left."""
    custom = client.CustomObjectsApi(api)

    async def gone() -> bool:
        try:
            await custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, "generationjobs", _request_timeout=120
            )
        except ApiException as error:
            if error.status != 504:
                raise
        except (aiohttp.ServerDisconnectedError, TimeoutError):
            pass  # the API server gave up on the request, not on the deletion
        listed = await custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "generationjobs", limit=1
        )
        return not listed["items"]

    await deadline(gone, 600, "jobs deleted")


@dataclass(frozen=True)
class SchedulerRun:
    rate: float  # pods bound per second
    scheduler_cpu_ms: float  # per pod
    apiserver_cpu_ms: float  # per pod


def scheduler_pid() -> int:
    return int((ROOT / ".diffleet" / "run" / "kube-scheduler.pid").read_text().strip())


async def bench_scheduler(
    api: client.ApiClient, pods: int, node_type: str = "kwok"
) -> SchedulerRun:
    """kube-scheduler binding `pods` pause pods onto the kwok nodes labelled type=`node_type`."""
    core = client.CoreV1Api(api)
    namespace = f"bench-pods-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    gate = asyncio.Semaphore(32)

    async def create(i: int | str) -> None:
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"p-{i}"),
            spec=client.V1PodSpec(
                node_selector={"type": node_type},
                tolerations=[client.V1Toleration(key="nvidia.com/gpu", operator="Exists")],
                containers=[client.V1Container(name="pause", image="registry.k8s.io/pause:3.10")],
            ),
        )
        async with gate:
            await core.create_namespaced_pod(namespace, pod)

    async def warm() -> bool:
        return bool((await core.read_namespaced_pod("p-warm-up", namespace)).spec.node_name)

    # A scheduler just restarted first lists the cluster: one pod bound before the clock
    # starts keeps its start-up out of the figure, as the operator's is out of its own.
    await create("warm-up")
    await deadline(warm, 120, "the warm-up pod bound")
    started = time.monotonic()
    cpu_before = cpu_seconds(scheduler_pid()), cpu_seconds(apiserver_pid())
    await asyncio.gather(*(create(i) for i in range(pods)))

    async def bound() -> bool:
        listed = await core.list_namespaced_pod(namespace)
        return sum(1 for p in listed.items if p.spec.node_name) >= pods + 1

    await deadline(bound, 600, "every pod bound")
    rate = pods / (time.monotonic() - started)
    cpu_after = cpu_seconds(scheduler_pid()), cpu_seconds(apiserver_pid())
    await core.delete_namespace(namespace)
    return SchedulerRun(
        rate,
        scheduler_cpu_ms=(cpu_after[0] - cpu_before[0]) * 1000 / pods,
        apiserver_cpu_ms=(cpu_after[1] - cpu_before[1]) * 1000 / pods,
    )


def restart_scheduler(extra_args: str) -> None:
    pid = str(scheduler_pid())
    os.killpg(int(pid), signal.SIGTERM)
    env = {**os.environ, "KUBE_SCHEDULER_EXTRA_ARGS": extra_args}
    while subprocess.run(["kill", "-0", pid], check=False, capture_output=True).returncode == 0:
        time.sleep(0.2)
    subprocess.run([str(ROOT / "hack" / "stack.sh"), "up-infra"], env=env, check=True)


def load() -> str:
    return " / ".join(f"{average:.2f}" for average in os.getloadavg())


async def run(jobs: int, workers: int, pods: int) -> None:
    scenarios = [
        Scenario("capacity", slots=-(-jobs // workers), job_seconds=600),
        Scenario("churn", slots=1, job_seconds=0.005),
    ]
    loads = [load()]
    await config.load_kube_config()
    async with client.ApiClient() as api:
        # Each operator run next to a scheduler run, so each pair shares the machine's
        # load of the moment (other engineers' work shares it).
        capacity = await bench_operator(api, jobs, workers, scenarios[0])
        loads.append(load())
        default = await bench_scheduler(api, pods)
        loads.append(load())
        churn = await bench_operator(api, jobs, workers, scenarios[1])
        loads.append(load())
        restart_scheduler(f"--kube-api-qps={RAISED_QPS} --kube-api-burst={RAISED_BURST}")
        try:
            raised = await bench_scheduler(api, pods)
        finally:
            restart_scheduler("")
        loads.append(load())
    RESULTS.write_text(report([capacity, churn], pods, default, raised, loads))
    print(RESULTS.read_text())


def scheduler_table(default: SchedulerRun, raised: SchedulerRun) -> str:
    rows = [
        ("default (`--kube-api-qps=50 --kube-api-burst=100`)", default),
        (f"raised (`--kube-api-qps={RAISED_QPS} --kube-api-burst={RAISED_BURST}`)", raised),
    ]
    return "\n".join(
        [
            "| scheduler client | pods bound per second | kube-scheduler CPU per pod "
            "| kube-apiserver CPU per pod |",
            "|---|---|---|---|",
            *(
                f"| {label} | {run.rate:.1f} | {run.scheduler_cpu_ms:.1f} ms "
                f"| {run.apiserver_cpu_ms:.1f} ms |"
                for label, run in rows
            ),
        ]
    )


def report(
    runs: list[dict[str, Any]],
    pods: int,
    default: SchedulerRun,
    raised: SchedulerRun,
    loads: list[str],
) -> str:
    capacity, churn = runs
    rows = [
        ("worker slots (jobs at once per worker)", "{slots}"),
        ("job run time (simulated)", "{seconds}"),
        ("creation rate (32 concurrent creates)", "{create_rate:.1f} jobs/s"),
        ("**dispatch throughput** (first create to last Scheduled)", "**{throughput:.1f} jobs/s**"),
        ("create to Scheduled, p50", "{p50_ms:.0f} ms"),
        ("create to Scheduled, p99", "{p99_ms:.0f} ms"),
        ("GenerationJob writes per job until Scheduled (watch)", "{writes_to_scheduled:.1f}"),
        ("GenerationJob writes per job in the window (API server)", "{job_writes:.1f}"),
        ("Event writes per job in the window (API server)", "{event_writes:.1f}"),
        ("operator CPU per job in the window", "{operator_cpu_ms:.1f} ms"),
        ("kube-apiserver CPU per job in the window", "{apiserver_cpu_ms:.1f} ms"),
        ("ratio to kube-scheduler, default client", "{ratio_default:.2f}"),
        ("ratio to kube-scheduler, raised QPS", "{ratio_raised:.2f}"),
    ]

    def cells(run: dict[str, Any]) -> dict[str, Any]:
        scenario: Scenario = run["scenario"]
        return run | {
            "slots": scenario.slots,
            "seconds": f"{scenario.job_seconds:g} s",
            "p50_ms": run["p50"] * 1000,
            "p99_ms": run["p99"] * 1000,
            "ratio_default": run["throughput"] / default.rate,
            "ratio_raised": run["throughput"] / raised.rate,
        }

    table = "\n".join(
        f"| {label} | {value.format(**cells(capacity))} | {value.format(**cells(churn))} |"
        for label, value in rows
    )
    return f"""# Dispatch benchmark

Measured by `bench/dispatch.py` on {time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, the
whole local stack (kube-apiserver, etcd, RabbitMQ, MinIO, the operator, the simulated
fleet and this script) on the same machine, which other engineers' test runs share: load
averages (1 / 5 / 15 min) before and after each run (capacity, scheduler with its
default client, churn, scheduler with raised QPS):
{"; ".join(loads)}.

## Operator: {capacity["jobs"]} jobs, {capacity["workers"]} simulated workers

Two fleets. *capacity*: every job finds a free slot and runs past the measurement, as
the pause pods below do (the like-for-like comparison with kube-scheduler). *churn*: one
slot per worker and near-instant jobs, so dispatch waits for completions and every job's
whole lifecycle (Running, Succeeded, their Events) shares the machine in the window.

| figure | capacity | churn |
|---|---|---|
{table}

Writes per job until Scheduled come from the benchmark's own watch (distinct resource
versions of each job): the create (with the operator's finalizer, added by the
MutatingAdmissionPolicy of manifests/admission/) and Scheduled (with Queued, for a job
dispatched while its admission was held; a job that waited has its own Queued write).
The API server's counters also count the jobs' later writes (Running, Succeeded) that
fall in the window, and anything else written to GenerationJobs and Events meanwhile on
this shared server. CPU per job is the process's user and system time from the first
create to the last Scheduled, divided by the jobs.

Operator clients: kopf's watch and kubernetes_asyncio for status writes and Events, with
no client-side rate limit (no QPS or burst; up to 100 connections). Admission runs from
the watch; the Scheduled write runs beside the dispatch loop (16 in flight); Events go
through a bounded queue with 16 posters.

## kube-scheduler: {pods} pause pods onto the kwok nodes

Pods created the same way (32 concurrent creates); rate = pods / (first create to last
bound).

{scheduler_table(default, raised)}

Reproduce: `make up-infra && make bench-dispatch`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--pods", type=int, default=600)
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.workers, args.pods))


if __name__ == "__main__":
    main()
