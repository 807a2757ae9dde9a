"""Fleet-scale benchmark: 1,000 kwok GPU nodes, a simulated worker on each, one operator.

1. Nodes: `hack/stack.sh up-scale` adds the nodes of --pools (300 h100, 300 a100,
   400 t4 by default), labelled type=kwok-scale, with a kwok of their own (its node
   Leases renewed every 30 s); the stack's own nodes stay.
2. Workers: one `diffleet-worker --simulate --replicas N` per pool hosts a worker per
   node (its Lease names the node), concurrency = the node's GPUs, times modelled by GPU
   type (`sim_gpu_profile`), Leases at the fleet's tuning (--lease-seconds 90,
   --renew-seconds 30: a heartbeat, plus a renewal when hot or warm models change).
3. Idle: API-server requests/s of the fleet at rest, by resource and verb
   (kube-apiserver's apiserver_request_total).
4. Fixed rate: --rate jobs/s for --seconds; requests/s at steady state (after the first
   quarter), jobs/s dispatched and finished, writes per job, operator CPU and RSS.
5. As fast as it goes: --jobs jobs created at once (32 concurrent creates).
6. kube-scheduler binds --pods pause pods onto the same nodes, in the same run
   (bench/dispatch.py's measurement).
Then everything it made is removed. Results: bench/results/scale.md.

--soak: the memory run instead (issue 15 §6): jobs at --rate, deleted by their TTL
(spec.ttlSecondsAfterFinished), until --max-jobs or --minutes; every --sample-seconds
the operator's RSS and CPU, the API server's stored objects and watch-cache capacity,
and etcd's database size. Results: bench/results/soak.md.

Needs the stack (`make up-infra`). Run: `make bench-scale`, `make bench-soak`.
"""

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from bench.dispatch import (
    GROUP,
    VERSION,
    Timeline,
    apiserver_pid,
    bench_scheduler,
    clean_up,
    cpu_seconds,
    deadline,
    load,
    percentile,
    register_model,
    spawn,
    spawn_operator,
    watch_jobs,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STACK = str(ROOT / "hack" / "stack.sh")
NODE_TYPE = "kwok-scale"
# pool:gpu-type:gpus-per-node:gpu-memory-MiB:nodes, as hack/stack.env KWOK_POOLS.
POOLS = (
    "h100:NVIDIA-H100-80GB-HBM3:8:81920:300 a100:NVIDIA-A100-SXM4-40GB:8:40960:300 "
    "t4:Tesla-T4:4:16384:400"
)
ETCD_METRICS = "http://127.0.0.1:23790/metrics"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
JOBS_RESOURCE = f"generationjobs.{GROUP}"


@dataclass(frozen=True)
class Pool:
    name: str
    gpu_type: str
    gpus: int
    memory_mib: int
    nodes: int

    @classmethod
    def parse(cls, spec: str) -> "Pool":
        name, gpu_type, gpus, memory, nodes = spec.split(":")
        return cls(name, gpu_type, int(gpus), int(memory), int(nodes))

    def spec(self) -> str:
        return f"{self.name}:{self.gpu_type}:{self.gpus}:{self.memory_mib}:{self.nodes}"


def scaled(pools: list[Pool], nodes: int) -> list[Pool]:
    """The pools with `nodes` in all, in the same proportions."""
    total = sum(pool.nodes for pool in pools)
    counts = [max(round(pool.nodes * nodes / total), 1) for pool in pools]
    counts[-1] += nodes - sum(counts)
    return [
        Pool(p.name, p.gpu_type, p.gpus, p.memory_mib, n)
        for p, n in zip(pools, counts, strict=True)
    ]


@dataclass(frozen=True)
class Tuning:
    lease_seconds: float
    renew_seconds: float


# ---------------------------------------------------------------- measurements


def metrics_text() -> str:
    return subprocess.run(
        ["kubectl", "get", "--raw", "/metrics"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip


def labels_of(line: str) -> dict[str, str]:
    inside = line[line.index("{") + 1 : line.rindex("}")]
    pairs = (item.split("=", 1) for item in inside.split('",') if "=" in item)
    return {key: value.strip('"') for key, value in pairs}


def request_counts() -> Counter[tuple[str, str]]:
    """kube-apiserver's requests so far by (resource[/subresource], verb); watches are
    counted once each, when opened."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in metrics_text().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = labels_of(line)
        resource = labels.get("resource", "") or "(non-resource)"
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[resource, labels.get("verb", "")] += int(float(line.rpartition(" ")[2]))
    return counts


def rates(
    before: Counter[tuple[str, str]], after: Counter[tuple[str, str]], seconds: float
) -> dict[tuple[str, str], float]:
    return {key: (after[key] - before[key]) / seconds for key in after if after[key] > before[key]}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gauges(text: str, name: str, **match: str) -> float:
    """The sum of a metric's samples whose labels include `match`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if "{" in line and any(labels_of(line).get(k) != v for k, v in match.items()):
            continue
        total += float(line.rpartition(" ")[2])
    return total


def etcd_text() -> str:
    with urllib.request.urlopen(ETCD_METRICS, timeout=10) as response:
        return str(response.read().decode())


@dataclass
class Sampler:
    """The operator's RSS, sampled every second while it runs."""

    pid: int
    peak_mib: float = 0.0

    async def run(self) -> None:
        while True:
            self.peak_mib = max(self.peak_mib, rss_mib(self.pid))
            await asyncio.sleep(1)


# ---------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    namespace: str
    pools: list[Pool]
    operator: subprocess.Popen[bytes]
    hosts: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def workers(self) -> int:
        return sum(pool.nodes for pool in self.pools)

    @property
    def slots(self) -> int:
        return sum(pool.nodes * pool.gpus for pool in self.pools)


def start_fleet(namespace: str, pools: list[Pool], tuning: Tuning) -> Fleet:
    logs = ROOT / ".diffleet" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = {"DIFFLEET_QUEUE_PREFIX": namespace}
    # The only operator of its namespace: a slow API server (the whole stack on 2 shared
    # cores) must not depose it (with 15 s it lost its Lease).
    operator = spawn_operator(
        namespace, logs / f"{namespace}-operator.log", leader_lease_seconds="90"
    )
    fleet = Fleet(namespace, pools, operator)
    for pool in pools:
        fleet.hosts.append(
            spawn(
                ["diffleet-worker", "--simulate", "--replicas", str(pool.nodes)],
                common | worker_env(pool, namespace, tuning),
                logs / f"{namespace}-workers-{pool.name}.log",
            )
        )
    return fleet


def worker_env(pool: Pool, namespace: str, tuning: Tuning) -> dict[str, str]:
    """The settings of a pool's hosted workers; replica i is the worker of node
    kwok-scale-<pool>-i."""
    return {
        "DIFFLEET_WORKER_WORKER_ID": pool.name,
        "DIFFLEET_WORKER_NODE": f"{NODE_TYPE}-{pool.name}",
        "DIFFLEET_WORKER_POOL": pool.name,
        "DIFFLEET_WORKER_GPU_TYPE": pool.name,
        "DIFFLEET_WORKER_VRAM_GIB": str(pool.memory_mib // 1024),
        "DIFFLEET_WORKER_CONCURRENCY": str(pool.gpus),
        "DIFFLEET_WORKER_FLEET_NAMESPACE": namespace,
        "DIFFLEET_WORKER_SIM_GPU_PROFILE": "true",
        "DIFFLEET_WORKER_LEASE_SECONDS": str(tuning.lease_seconds),
        "DIFFLEET_WORKER_RENEW_SECONDS": str(tuning.renew_seconds),
        "DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
    }


def stop_fleet(fleet: Fleet) -> None:
    for process in (*fleet.hosts, fleet.operator):
        process.send_signal(signal.SIGTERM)
    for process in (*fleet.hosts, fleet.operator):
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def scale_nodes(pools: list[Pool]) -> Iterator[None]:
    """The benchmark's nodes and their kwok, removed on the way out."""
    try:
        subprocess.run([STACK, "up-scale", " ".join(p.spec() for p in pools)], check=True)
        yield
    finally:
        subprocess.run([STACK, "down-scale"], check=False)


async def nodes_ready(core: client.CoreV1Api, count: int) -> None:
    async def ready() -> bool:
        nodes = await core.list_node(label_selector=f"type={NODE_TYPE}")
        return (
            sum(
                1
                for node in nodes.items
                for c in node.status.conditions or []
                if c.type == "Ready" and c.status == "True"
            )
            >= count
        )

    await deadline(ready, 300, f"{count} nodes Ready")


async def workers_announced(api: client.ApiClient, namespace: str, count: int) -> None:
    coordination = client.CoordinationV1Api(api)

    async def announced() -> bool:
        leases = await coordination.list_namespaced_lease(
            namespace, label_selector="diffleet.io/worker=true"
        )
        return len(leases.items) >= count

    await deadline(announced, 900, f"{count} workers announced")


# ---------------------------------------------------------------- jobs


def job_body(name: str, ttl: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GenerationJob",
        "metadata": {"name": name},
        "spec": {"model": "m", "prompt": "a green triangle", "steps": 4,
                 "ttlSecondsAfterFinished": ttl},
    }  # fmt: skip


async def create_at_rate(
    custom: client.CustomObjectsApi,
    namespace: str,
    prefix: str,
    rate: float,
    count: int,
    seen: Timeline,
    ttl: int,
    until: float = float("inf"),
) -> int:
    """Creates `count` jobs at `rate` per second (`rate` 0: 32 creates at once, as fast
    as they go), stopping early at monotonic `until`; returns how many it created."""
    gate = asyncio.Semaphore(32)
    tasks: set[asyncio.Task[None]] = set()

    async def create(name: str) -> None:
        async with gate:
            await custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "generationjobs", job_body(name, ttl)
            )
            seen.created[name] = time.monotonic()

    started = time.monotonic()
    created = 0
    for i in range(count):
        if time.monotonic() >= until:
            break
        if rate:
            await asyncio.sleep(max(started + i / rate - time.monotonic(), 0))
        task = asyncio.create_task(create(f"{prefix}-{i:06d}"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        created += 1
        if not rate and len(tasks) >= 256:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if tasks:
        await asyncio.gather(*tasks)
    return created


async def event_writes(api: client.ApiClient, namespace: str) -> int:
    """Event writes in the namespace so far: one per Event (the operator posts each once;
    a tallied Event's count is the jobs it stands for, not writes). The API server's
    counters would also count other namespaces' Events."""
    events = await client.CoreV1Api(api).list_namespaced_event(namespace)
    return len(events.items)


def of_phase(times: dict[str, float], prefix: str) -> dict[str, float]:
    return {name: t for name, t in times.items() if name.startswith(prefix + "-")}


@dataclass
class Phase:
    name: str
    jobs: int
    seconds: float  # first create to last finished
    dispatched_per_s: float
    finished_per_s: float
    p50_dispatch_s: float
    p99_dispatch_s: float
    job_writes: float  # GenerationJob writes per job until it finished, the create included
    event_writes: float
    operator_cpu_percent: float
    operator_rss_mib: float
    apiserver_cpu_percent: float
    requests: dict[tuple[str, str], float]  # per second, at steady state
    load: str


async def run_phase(
    api: client.ApiClient,
    fleet: Fleet,
    seen: Timeline,
    sampler: Sampler,
    name: str,
    rate: float,
    jobs: int,
) -> Phase:
    custom = client.CustomObjectsApi(api)
    events_before = await event_writes(api, fleet.namespace)
    cpu_before = cpu_seconds(fleet.operator.pid), cpu_seconds(apiserver_pid())
    sampler.peak_mib = 0.0
    started = time.monotonic()
    creating = asyncio.create_task(
        create_at_rate(custom, fleet.namespace, name, rate, jobs, seen, ttl=86400)
    )
    # Steady state: from a quarter of the way into the creates to their end.
    steady = (jobs / rate) if rate else 0.0
    requests_before = request_counts()
    window_start = time.monotonic()
    if rate:
        await asyncio.sleep(steady / 4)
        requests_before, window_start = request_counts(), time.monotonic()
    await creating
    requests_after, window_end = request_counts(), time.monotonic()

    async def finished() -> bool:
        return len(of_phase(seen.finished, name)) >= jobs

    await deadline(finished, 1200, f"{name}: every job finished")
    ended = time.monotonic()
    cpu_after = cpu_seconds(fleet.operator.pid), cpu_seconds(apiserver_pid())
    events_after = await event_writes(api, fleet.namespace)
    created, scheduled = of_phase(seen.created, name), of_phase(seen.scheduled, name)
    done = of_phase(seen.finished, name)
    latencies = [scheduled[n] - created[n] for n in created if n in scheduled]
    return Phase(
        name=name,
        jobs=jobs,
        seconds=ended - started,
        dispatched_per_s=jobs / (max(scheduled.values()) - started),
        finished_per_s=jobs / (max(done.values()) - started),
        p50_dispatch_s=percentile(latencies, 50),
        p99_dispatch_s=percentile(latencies, 99),
        job_writes=statistics.mean(len(seen.lifetime[n]) for n in created),
        event_writes=(events_after - events_before) / jobs,
        operator_cpu_percent=100 * (cpu_after[0] - cpu_before[0]) / (ended - started),
        operator_rss_mib=sampler.peak_mib,
        apiserver_cpu_percent=100 * (cpu_after[1] - cpu_before[1]) / (ended - started),
        requests=rates(requests_before, requests_after, window_end - window_start),
        load=load(),
    )


# ---------------------------------------------------------------- the scale run


@dataclass
class Setup:
    pools: list[Pool]
    tuning: Tuning
    nodes_seconds: float
    announce_seconds: float
    baseline: dict[tuple[str, str], float]  # before the fleet
    idle: dict[tuple[str, str], float]
    idle_seconds: float
    idle_operator_cpu_percent: float
    idle_apiserver_cpu_percent: float
    idle_rss_mib: float
    load: str


async def measure_requests(seconds: float) -> tuple[dict[tuple[str, str], float], float]:
    """Requests/s by resource and verb over `seconds`, and kube-apiserver's CPU (% of a
    core) meanwhile."""
    before, cpu_before = request_counts(), cpu_seconds(apiserver_pid())
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu = 100 * (cpu_seconds(apiserver_pid()) - cpu_before) / elapsed
    return rates(before, request_counts(), elapsed), cpu


async def run_scale(args: argparse.Namespace) -> None:
    pools = scaled([Pool.parse(spec) for spec in args.pools.split()], args.nodes)
    tuning = Tuning(args.lease_seconds, args.renew_seconds)
    namespace = f"scale-{uuid.uuid4().hex[:6]}"
    await config.load_kube_config()
    async with client.ApiClient() as api:
        core = client.CoreV1Api(api)
        # The shared API server's traffic before the fleet exists (other engineers' tests
        # and the stack's own components), for comparison with the fleet at rest.
        baseline, _ = await measure_requests(args.idle_seconds)
        started = time.monotonic()
        with scale_nodes(pools):
            await nodes_ready(core, sum(p.nodes for p in pools))
            nodes_seconds = time.monotonic() - started
            await core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
            )
            fleet = start_fleet(namespace, pools, tuning)
            fleet_started = time.monotonic()
            sampler = Sampler(fleet.operator.pid)
            sampling = asyncio.create_task(sampler.run())
            seen = Timeline()
            watcher = asyncio.create_task(watch_jobs(client.CustomObjectsApi(api), namespace, seen))
            try:
                await register_model(client.CustomObjectsApi(api), namespace)
                await workers_announced(api, namespace, fleet.workers)
                announce_seconds = time.monotonic() - fleet_started
                operator_cpu = cpu_seconds(fleet.operator.pid), time.monotonic()
                idle, idle_api = await measure_requests(args.idle_seconds)
                idle_op = (
                    100
                    * (cpu_seconds(fleet.operator.pid) - operator_cpu[0])
                    / (time.monotonic() - operator_cpu[1])
                )
                setup = Setup(
                    pools, tuning, nodes_seconds, announce_seconds, baseline, idle,
                    args.idle_seconds, idle_op, idle_api, rss_mib(fleet.operator.pid), load(),
                )  # fmt: skip
                fixed = await run_phase(
                    api, fleet, seen, sampler, "rate", args.rate, int(args.rate * args.seconds)
                )
                fastest = await run_phase(api, fleet, seen, sampler, "max", 0, args.jobs)
                scheduler = await bench_scheduler(api, args.pods, NODE_TYPE)
                scheduler_load = load()
            finally:
                watcher.cancel()
                sampling.cancel()
                await clean_up(api, namespace)
                stop_fleet(fleet)
                await core.delete_namespace(namespace)
    path = RESULTS / "scale.md"
    path.write_text(scale_report(setup, [fixed, fastest], scheduler, scheduler_load, args))
    print(path.read_text())


def request_table(columns: dict[str, dict[tuple[str, str], float]], top: int = 14) -> str:
    totals = {label: sum(values.values()) for label, values in columns.items()}
    keys = sorted(
        {key for values in columns.values() for key in values},
        key=lambda key: -max(values.get(key, 0.0) for values in columns.values()),
    )
    header = "| resource | verb | " + " | ".join(columns) + " |"
    rule = "|---|---|" + "---|" * len(columns)
    rows = [
        f"| {resource} | {verb} | "
        + " | ".join(f"{values.get((resource, verb), 0.0):.1f}" for values in columns.values())
        + " |"
        for resource, verb in keys[:top]
    ]
    total = "| **all** | | " + " | ".join(f"**{totals[label]:.1f}**" for label in columns) + " |"
    return "\n".join([header, rule, *rows, total])


def writes(values: dict[tuple[str, str], float], resource: str) -> float:
    return sum(rate for (res, verb), rate in values.items() if res == resource and verb in WRITES)


def scale_report(
    setup: Setup, phases: list[Phase], scheduler: Any, scheduler_load: str, args: Any
) -> str:
    fixed, fastest = phases
    pools = ", ".join(f"{p.nodes} {p.name} ({p.gpus} GPUs)" for p in setup.pools)
    workers = sum(p.nodes for p in setup.pools)
    slots = sum(p.nodes * p.gpus for p in setup.pools)
    rows = [
        ("jobs", "{jobs}"),
        ("first create to last finished", "{seconds:.0f} s"),
        ("**jobs dispatched per second**", "**{dispatched_per_s:.1f}**"),
        ("**jobs finished per second**", "**{finished_per_s:.1f}**"),
        ("create to Scheduled, p50 / p99", "{p50_dispatch_s:.2f} s / {p99_dispatch_s:.2f} s"),
        ("GenerationJob writes per job, create to finished (watch)", "{job_writes:.2f}"),
        ("Event writes per job (the namespace's Events)", "{event_writes:.2f}"),
        ("operator CPU (of one core)", "{operator_cpu_percent:.0f} %"),
        ("operator peak RSS", "{operator_rss_mib:.0f} MiB"),
        ("kube-apiserver CPU (of one core)", "{apiserver_cpu_percent:.0f} %"),
        ("API-server requests/s (steady state)", "{total_requests:.0f}"),
        ("load averages after", "{load}"),
    ]

    def cells(phase: Phase) -> dict[str, Any]:
        return vars(phase) | {"total_requests": sum(phase.requests.values())}

    table = "\n".join(
        f"| {label} | {value.format(**cells(fixed))} | {value.format(**cells(fastest))} |"
        for label, value in rows
    )
    idle_leases = writes(setup.idle, "leases")
    return f"""# Fleet-scale benchmark

Measured by `bench/scale.py` on {time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores shared
with other engineers' test runs: the whole local stack (kube-apiserver, etcd, RabbitMQ,
MinIO, kwok, the operator, {workers} simulated workers in {len(setup.pools)} processes and
this script) on one machine. Load averages (1 / 5 / 15 min) after each step are in the
tables.

## The fleet

{workers} kwok nodes ({pools}): {slots} GPU slots. One simulated worker per node
(`diffleet-worker --simulate --replicas N`, one process per pool), its concurrency the
node's GPUs, its load and step times modelled by GPU type (`sim_gpu_profile`,
gpu-worker/src/diffleet_worker/sim_profiles.py). Jobs: SD 1.5, 4 steps, 512x512 (0.08 s
of steps on an H100, 0.6 s on a T4), one model (cold load 1.8 s on an H100 to 6.5 s on
a T4, once per worker).

- Nodes created and Ready: {setup.nodes_seconds:.0f} s; every worker's Lease present
  {setup.announce_seconds:.0f} s after the worker processes started.
- Worker Leases: duration {setup.tuning.lease_seconds:g} s, heartbeat every
  {setup.tuning.renew_seconds:g} s (jittered), and a renewal within 1 s when a worker's hot
  or warm models change. Node Leases (kwok): duration 120 s, renewed every 30 s.

## At rest ({setup.idle_seconds:g} s, no jobs; load {setup.load})

API-server requests per second by resource and verb (apiserver_request_total; a watch
counts once, when opened):

{request_table({"before the fleet": setup.baseline, "fleet at rest": setup.idle})}

The counters are the whole API server's: other engineers' test runs share it, so the
fleet's own cost is what the second column adds to the first. Lease writes at rest:
{idle_leases:.1f}/s ({writes(setup.baseline, "leases"):.1f}/s before the fleet): the
worker Leases' heartbeats (PATCH) and the nodes' (kwok, PUT).
Operator CPU {setup.idle_operator_cpu_percent:.1f} % of a core, RSS
{setup.idle_rss_mib:.0f} MiB; kube-apiserver CPU {setup.idle_apiserver_cpu_percent:.0f} %
of a core.

## Jobs

*fixed rate*: {args.rate:g} jobs/s for {args.seconds:g} s. *as fast as it goes*:
{args.jobs} jobs created by 32 concurrent creates. Dispatched / finished per second:
jobs / (first create to last Scheduled / last Succeeded).

| figure | fixed rate | as fast as it goes |
|---|---|---|
{table}

Requests per second at steady state (fixed rate: from a quarter of the way into the
creates to their end; as fast as it goes: over the creates):

{request_table({"fixed rate": fixed.requests, "as fast as it goes": fastest.requests})}

## kube-scheduler on the same nodes, same run

{args.pods} pause pods (32 concurrent creates) bound onto the {workers} kwok-scale nodes by
kube-scheduler with its default client (QPS 50, burst 100): **{scheduler.rate:.1f} pods/s**
(kube-scheduler CPU {scheduler.scheduler_cpu_ms:.1f} ms per pod, kube-apiserver
{scheduler.apiserver_cpu_ms:.1f} ms per pod); load after: {scheduler_load}.

Reproduce: `make up-infra && make bench-scale` (`SCALE_ARGS="--nodes 100"` for a
smaller fleet).
"""


# ---------------------------------------------------------------- the soak


@dataclass(frozen=True)
class Sample:
    minute: float
    created: int
    finished: int
    operator_rss_mib: float
    operator_cpu_percent: float
    apiserver_rss_mib: float
    stored_jobs: float
    stored_events: float
    watch_cache_jobs: float
    etcd_db_mib: float
    etcd_in_use_mib: float
    load: str


def sample(fleet: Fleet, seen: Timeline, started: float, cpu: tuple[float, float]) -> Sample:
    text, etcd = metrics_text(), etcd_text()
    now = time.monotonic()
    return Sample(
        minute=(now - started) / 60,
        created=len(seen.created),
        finished=len(seen.finished),
        operator_rss_mib=rss_mib(fleet.operator.pid),
        operator_cpu_percent=100 * (cpu_seconds(fleet.operator.pid) - cpu[0]) / (now - cpu[1]),
        apiserver_rss_mib=rss_mib(apiserver_pid()),
        stored_jobs=gauges(text, "apiserver_storage_objects", resource=JOBS_RESOURCE),
        stored_events=gauges(text, "apiserver_storage_objects", resource="events"),
        watch_cache_jobs=gauges(text, "watch_cache_capacity", resource="generationjobs"),
        etcd_db_mib=gauges(etcd, "etcd_mvcc_db_total_size_in_bytes") / 2**20,
        etcd_in_use_mib=gauges(etcd, "etcd_mvcc_db_total_size_in_use_in_bytes") / 2**20,
        load=load(),
    )


async def run_soak(args: argparse.Namespace) -> None:
    pools = scaled([Pool.parse(spec) for spec in args.pools.split()], args.nodes)
    tuning = Tuning(args.lease_seconds, args.renew_seconds)
    namespace = f"soak-{uuid.uuid4().hex[:6]}"
    samples: list[Sample] = []
    await config.load_kube_config()
    async with client.ApiClient() as api:
        core = client.CoreV1Api(api)
        # No kwok nodes: memory is the operator's and the API server's question, and a
        # soak without them can run beside bench-scale (its workers name nodes that do
        # not exist, which nothing checks).
        await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
        fleet = start_fleet(namespace, pools, tuning)
        seen = Timeline()
        watcher = asyncio.create_task(watch_jobs(client.CustomObjectsApi(api), namespace, seen))
        try:
            await register_model(client.CustomObjectsApi(api), namespace)
            await workers_announced(api, namespace, fleet.workers)
            started = time.monotonic()
            until = started + args.minutes * 60
            creating = asyncio.create_task(
                create_at_rate(
                    client.CustomObjectsApi(api), namespace, "soak", args.rate,
                    args.max_jobs, seen, ttl=args.ttl, until=until,
                )
            )  # fmt: skip
            cpu = cpu_seconds(fleet.operator.pid), time.monotonic()
            while not creating.done():
                samples.append(sample(fleet, seen, started, cpu))
                print(samples[-1], flush=True)
                cpu = cpu_seconds(fleet.operator.pid), time.monotonic()
                await asyncio.wait({creating}, timeout=args.sample_seconds)
            samples.append(sample(fleet, seen, started, cpu))
        finally:
            watcher.cancel()
            await clean_up(api, namespace)
            stop_fleet(fleet)
            await core.delete_namespace(namespace)
    path = RESULTS / "soak.md"
    path.write_text(soak_report(pools, samples, args))
    print(path.read_text())


SOAK_HEADER = (
    "| minute | created | finished | operator RSS MiB | operator CPU | kube-apiserver RSS MiB "
    "| GenerationJobs stored | Events stored | watch cache capacity (jobs) | etcd DB MiB "
    "| etcd in use MiB | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def soak_report(pools: list[Pool], samples: list[Sample], args: Any) -> str:
    rows = "\n".join(
        f"| {s.minute:.1f} | {s.created} | {s.finished} | {s.operator_rss_mib:.0f} "
        f"| {s.operator_cpu_percent:.0f} % | {s.apiserver_rss_mib:.0f} | {s.stored_jobs:.0f} "
        f"| {s.stored_events:.0f} | {s.watch_cache_jobs:.0f} | {s.etcd_db_mib:.0f} "
        f"| {s.etcd_in_use_mib:.0f} | {s.load} |"
        for s in samples
    )
    third = max(len(samples) // 3, 1)
    middle = statistics.mean(s.operator_rss_mib for s in samples[third : 2 * third] or samples)
    last = statistics.mean(s.operator_rss_mib for s in samples[-third:])
    return f"""# Soak: memory over a long run

Measured by `bench/scale.py --soak` on {time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores
shared with other engineers' work (load averages per sample). {sum(p.nodes for p in pools)}
simulated workers as in bench/results/scale.md (without their kwok nodes), one operator; jobs
created at {args.rate:g}/s (4 steps, SD 1.5) with `ttlSecondsAfterFinished: {args.ttl}`,
so the operator deletes each finished job {args.ttl} s after it ends; bounded by
{args.max_jobs} jobs or {args.minutes:g} minutes, whichever comes first.

Operator RSS: {middle:.0f} MiB on average over the middle third of the samples,
{last:.0f} MiB over the last third ({100 * (last - middle) / middle:+.1f} %).

{SOAK_HEADER}
{rows}

GenerationJobs stored: kube-apiserver's `apiserver_storage_objects`; watch cache
capacity: its `watch_cache_capacity` for GenerationJobs (the ring of recent events it
keeps per resource). etcd: `etcd_mvcc_db_total_size_in_bytes` (the file; it only shrinks
on a defragmentation) and `..._in_use_in_bytes` (what compaction leaves live).
kube-apiserver compacts etcd every 5 minutes (its default `--etcd-compaction-interval`).

Reproduce: `make up-infra && make bench-soak` (`SOAK_ARGS="--minutes 20"` for a shorter
run).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", default=POOLS, help="pool:gpu-type:gpus:memory-MiB:nodes")
    parser.add_argument("--nodes", type=int, help="scale the pools to this many nodes")
    parser.add_argument("--lease-seconds", type=float, default=90)
    parser.add_argument("--renew-seconds", type=float, default=30)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=10, help="jobs/s of the fixed-rate run")
    parser.add_argument("--seconds", type=float, default=120, help="fixed-rate run length")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs of the as-fast run")
    parser.add_argument("--pods", type=int, default=600)
    parser.add_argument("--soak", action="store_true", help="the memory run instead")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--max-jobs", type=int, default=100_000)
    parser.add_argument("--ttl", type=int, default=30, help="soak: ttlSecondsAfterFinished")
    parser.add_argument("--sample-seconds", type=float, default=60)
    args = parser.parse_args()
    if args.nodes is None:
        args.nodes = 100 if args.soak else sum(Pool.parse(s).nodes for s in args.pools.split())
    asyncio.run(run_soak(args) if args.soak else run_scale(args))


if __name__ == "__main__":
    main()
