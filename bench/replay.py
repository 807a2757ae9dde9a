"""Trace replay: a job trace (bench/traces.py) through the real operator onto N simulated
workers, reported against the trace's reference figures (bench/bound.py).

    bench/replay.py TRACE.jsonl --workers N --concurrency C --hot-slots K \\
        --load-seconds L --speedup X --json OUT.json [--markdown OUT.md]

Against the local stack (`make up-infra`), in namespaces of its own:
1. An operator serves the run's fleet namespace (its own queue prefix) and a namespace
   per tenant of the trace (labelled with its tier, if the trace names one). The N
   workers are one `diffleet-worker --simulate --replicas N` process announcing a pool
   and GPU type of their own (`replay`), which every job asks for (`gpuClass`). No
   GPUPool names that pool, so the autoscaler leaves it alone: N workers throughout.
2. Each worker runs C jobs at once and holds K checkpoints hot; a checkpoint not hot
   takes L seconds to load (from disk or S3 alike), a LoRA none.
3. The models and LoRAs the trace names are registered (a tiny file each in S3, a
   ModelCache per tenant namespace, Ready before the clock starts; a model's file is
   shared, so its digest is the same in every namespace).
4. Job i is created at t_i / X; it runs round(seconds_i / STEP_SECONDS) steps of
   STEP_SECONDS / X each. Every time is divided by X; every reported time is in trace
   seconds.

Figures: checkpoint loads (the workers' `diffleet_worker_checkpoint_loads_total`), p50
and p99 wait (a job's `t` to the worker taking it, before its load, from the workers'
records, SIM_RECORD_PATH), makespan (trace start to the last job done), writes per job
(kube-apiserver's apiserver_request_total for GenerationJobs and Events, delta over the
run; the API server is shared, so other clients' writes in the window count too; and the
jobs' own resource versions seen on a watch, exact), the operator's peak RSS (sampled
from /proc every second), and `reference`: bench/bound.py's figures for the trace.

The run is bounded (--limit, by default from the trace); it then stops, and in every
case deletes its jobs, stops its processes and deletes its namespaces.
"""

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, `bench/replay.py`, as well as `-m bench.replay`
    sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from kubernetes_asyncio import client, config, watch  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402

from bench import bound  # noqa: E402
from bench.dispatch import clean_up, spawn, spawn_operator, write_counts  # noqa: E402
from bench.traces import Record, load  # noqa: E402

GROUP, VERSION = "diffleet.io", "v1alpha1"
# Trace seconds per simulated denoising step: a job's service time, rounded to it.
STEP_SECONDS = 0.5
MAX_STEPS = 150  # GenerationJob spec.steps
FLEET_TYPE = "replay"  # the workers' pool and GPU type, and the jobs' gpuClass
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
MODELS_BUCKET = "diffleet-models"
Process = subprocess.Popen[bytes]
CREATES_IN_FLIGHT = 32


@dataclass(frozen=True)
class Fleet(bound.Fleet):
    """bench/bound.py's fleet, replayed `speedup` times faster."""

    speedup: float


@dataclass
class Job:
    """One trace record as the replay runs it."""

    index: int
    t: float
    model: str
    lora: str | None
    seconds: float
    namespace: str
    uid: str = ""
    created: float = 0.0  # wall clock, when its create returned

    @property
    def name(self) -> str:
        return f"job-{self.index:05d}"

    @property
    def steps(self) -> int:
        return min(max(round(self.seconds / STEP_SECONDS), 1), MAX_STEPS)


@dataclass
class Seen:
    """What the watch saw: each job's terminal phase and its distinct resource versions."""

    phases: dict[tuple[str, str], str] = field(default_factory=dict)
    versions: dict[tuple[str, str], set[str]] = field(default_factory=dict)


def dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40] or "x"


def namespaces_of(records: Sequence[Record], run: str) -> dict[str, str | None]:
    """The run's job namespaces (one per tenant and tier of the trace) with their tier."""
    spaces: dict[str, str | None] = {}
    for record in records:
        spaces[namespace_of(record, run)] = record.get("tier")
    return spaces


def namespace_of(record: Record, run: str) -> str:
    parts = [run, dns_label(record.get("tenant") or "jobs")]
    if record.get("tier"):
        parts.append(dns_label(record["tier"]))
    return "-".join(parts)[:63]


def jobs_of(records: Sequence[Record], run: str) -> list[Job]:
    return [
        Job(
            index=index,
            t=float(record["t"]),
            model=dns_label(record["model"]),
            lora=dns_label(lora) if (lora := record.get("lora")) else None,
            seconds=float(record["seconds"]),
            namespace=namespace_of(record, run),
        )
        for index, record in enumerate(records)
    ]


class Replay:
    def __init__(self, api: client.ApiClient, fleet: Fleet, run: str, logs: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.fleet = fleet
        self.run = run
        self.logs = logs
        self.record_path = logs / f"{run}-record.jsonl"
        self.worker_metrics_port = free_port()
        self.seen = Seen()
        self.max_rss_kib = 0

    # -- set-up -----------------------------------------------------------------------

    async def create_namespaces(self, spaces: dict[str, str | None]) -> None:
        await self._create_namespace(self.run, None)
        for name, tier in spaces.items():
            if name != self.run:
                await self._create_namespace(name, tier)

    async def _create_namespace(self, name: str, tier: str | None) -> None:
        labels = {"diffleet.io/tier": tier} if tier else None
        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        await self.core.create_namespace(body, _request_timeout=30)

    def start_operator(self, spaces: Sequence[str], run_seconds: float) -> Process:
        """The operator, told the fleet's load time and the trace's mean run time (as an
        SRE sets them for a fleet) until it has observed its own."""
        speedup = self.fleet.speedup
        return spawn_operator(
            self.run,
            self.logs / f"{self.run}-operator.log",
            spaces,
            identity=f"{self.run}-operator",
            autoscaler_model_load_seconds=str(self.fleet.load_seconds / speedup),
            autoscaler_run_seconds=str(run_seconds / speedup),
        )

    def start_workers(self) -> Process:
        fleet, speedup = self.fleet, self.fleet.speedup
        return spawn(
            ["diffleet-worker", "--simulate", "--replicas", str(fleet.workers)],
            {
                "DIFFLEET_QUEUE_PREFIX": self.run,
                "DIFFLEET_WORKER_WORKER_ID": self.run,
                "DIFFLEET_WORKER_FLEET_NAMESPACE": self.run,
                "DIFFLEET_WORKER_POOL": FLEET_TYPE,
                "DIFFLEET_WORKER_GPU_TYPE": FLEET_TYPE,
                "DIFFLEET_WORKER_CONCURRENCY": str(fleet.concurrency),
                "DIFFLEET_WORKER_SIM_HOT_SLOTS": str(fleet.hot_slots),
                "DIFFLEET_WORKER_SIM_LOAD_SECONDS": str(fleet.load_seconds / speedup),
                "DIFFLEET_WORKER_SIM_WARM_LOAD_SECONDS": str(fleet.load_seconds / speedup),
                "DIFFLEET_WORKER_SIM_STEP_SECONDS": str(STEP_SECONDS / speedup),
                "DIFFLEET_WORKER_SIM_RECORD_PATH": str(self.record_path),
                "DIFFLEET_WORKER_PREVIEW_EVERY_STEPS": "0",
                "DIFFLEET_WORKER_METRICS_PORT": str(self.worker_metrics_port),
                "DIFFLEET_WORKER_METRICS_HOST": "127.0.0.1",
            },
            self.logs / f"{self.run}-workers.log",
        )

    async def register_models(self, jobs: Sequence[Job], spaces: Sequence[str]) -> int:
        """One tiny file per model and LoRA, a ModelCache for each in every namespace;
        returns once all are Ready. The number of ModelCaches."""
        s3 = boto3.client("s3")
        kinds = {job.model: "checkpoint" for job in jobs} | {
            job.lora: "lora" for job in jobs if job.lora
        }
        sources = {}
        for name in kinds:
            key = f"bench/{self.run}/{name}.safetensors"
            header = json.dumps({"__metadata__": {"replay": key}}).encode()
            tiny = struct.pack("<Q", len(header)) + header  # a valid, empty safetensors file
            await asyncio.to_thread(s3.put_object, Bucket=MODELS_BUCKET, Key=key, Body=tiny)
            sources[name] = f"s3://{MODELS_BUCKET}/{key}"
        for namespace in spaces:
            for name, kind in kinds.items():
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ModelCache",
                    "metadata": {"name": name},
                    "spec": {"source": sources[name], "format": "safetensors", "type": kind,
                             "baseModel": "sd15", "vramGiB": 4},
                }  # fmt: skip
                await self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "modelcaches", body, _request_timeout=30
                )
        expected = len(kinds) * len(spaces)

        async def ready() -> bool:
            count = 0
            for namespace in spaces:
                listed = await self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "modelcaches", _request_timeout=30
                )
                count += sum(
                    1 for mc in listed["items"] if (mc.get("status") or {}).get("phase") == "Ready"
                )
            return count == expected

        await until(ready, 120 + expected, f"{expected} ModelCaches Ready")
        return expected

    async def wait_for_fleet(self) -> None:
        coordination = client.CoordinationV1Api(self.api)

        async def announced() -> bool:
            leases = await coordination.list_namespaced_lease(
                self.run, label_selector="diffleet.io/worker=true", _request_timeout=30
            )
            return len(leases.items) >= self.fleet.workers

        await until(announced, 120, f"{self.fleet.workers} workers announced")

    # -- the run ----------------------------------------------------------------------

    async def follow(self, namespace: str) -> None:
        """Records each job's terminal phase and resource versions; resumes, relisting
        when its version has expired, until cancelled."""
        version = ""
        while True:
            try:
                async with watch.Watch().stream(
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                    "generationjobs", resource_version=version, timeout_seconds=60,
                ) as events:  # fmt: skip
                    async for event in events:
                        if event["type"] == "ERROR":
                            version = ""
                            break
                        job = event["object"]
                        version = job["metadata"]["resourceVersion"]
                        key = (namespace, job["metadata"]["name"])
                        self.seen.versions.setdefault(key, set()).add(version)
                        phase = (job.get("status") or {}).get("phase")
                        if phase in TERMINAL:
                            self.seen.phases[key] = phase
            except ApiException as error:
                if error.status != 410:
                    raise
                version = ""

    async def create_jobs(self, jobs: Sequence[Job], t0: float) -> None:
        """Each job created at t0 + t / speedup (wall clock), 32 creates in flight at most."""
        gate = asyncio.Semaphore(CREATES_IN_FLIGHT)
        tasks = []

        async def create(job: Job) -> None:
            spec: dict[str, Any] = {
                "model": job.model,
                "prompt": "a replayed job",
                "steps": job.steps,
                "width": 64,
                "height": 64,
                "gpuClass": FLEET_TYPE,
            }
            if job.lora:
                spec["loras"] = [{"model": job.lora}]
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "GenerationJob",
                "metadata": {"name": job.name},
                "spec": spec,
            }
            async with gate:
                created = await self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, job.namespace, "generationjobs", body, _request_timeout=60
                )
            job.uid = created["metadata"]["uid"]
            job.created = time.time()

        for job in jobs:
            await asyncio.sleep(max(t0 + job.t / self.fleet.speedup - time.time(), 0))
            tasks.append(asyncio.create_task(create(job)))
        await asyncio.gather(*tasks)

    async def drop_finalizers(self, namespace: str) -> None:
        """Drops the finalizers of the jobs left (the operator is stopped by then)."""
        listed = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "generationjobs", _request_timeout=120
        )
        gate = asyncio.Semaphore(CREATES_IN_FLIGHT)
        patch = {"metadata": {"finalizers": None}}

        async def drop(name: str) -> None:
            async with gate:
                try:
                    # _content_type: a runtime keyword the bundled stubs do not declare.
                    await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                        GROUP, VERSION, namespace, "generationjobs", name, patch,
                        _content_type="application/merge-patch+json", _request_timeout=30,
                    )  # fmt: skip
                except ApiException as error:
                    if error.status != 404:
                        raise

        await asyncio.gather(*(drop(job["metadata"]["name"]) for job in listed["items"]))

    async def sample_rss(self, pid: int) -> None:
        while True:
            self.max_rss_kib = max(self.max_rss_kib, rss_kib(pid))
            await asyncio.sleep(1)

    def checkpoint_loads(self) -> int:
        """The workers' diffleet_worker_checkpoint_loads_total, every tier."""
        url = f"http://127.0.0.1:{self.worker_metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return round(
            sum(
                float(line.rpartition(" ")[2])
                for line in text.splitlines()
                if line.startswith("diffleet_worker_checkpoint_loads_total{")
            )
        )

    def records(self) -> dict[str, dict[str, Any]]:
        """The workers' record of each job's last run, by uid."""
        if not self.record_path.exists():
            return {}
        lines = self.record_path.read_text().splitlines()
        return {record["uid"]: record for record in map(json.loads, lines)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def until(probe: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not await probe():
        if time.monotonic() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.5)


def default_limit(jobs: Sequence[Job], fleet: Fleet) -> float:
    """Wall seconds the run may take: the trace's span, or every job loading its model
    one after another on the fleet if longer, half again, plus two minutes."""
    slots = fleet.workers * fleet.concurrency
    serial = sum(job.seconds + fleet.load_seconds for job in jobs) / slots
    span = max(jobs[-1].t if jobs else 0.0, serial)
    return 1.5 * span / fleet.speedup + 120


async def replay(records: list[Record], fleet: Fleet, limit: float | None) -> dict[str, Any]:
    run = f"replay-{uuid.uuid4().hex[:6]}"
    logs = ROOT / ".diffleet" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    jobs = jobs_of(records, run)
    spaces = namespaces_of(records, run)
    await config.load_kube_config()
    processes: list[Process] = []
    async with client.ApiClient() as api:
        bench = Replay(api, fleet, run, logs)
        try:
            await bench.create_namespaces(spaces)
            mean_run = statistics.fmean(record["seconds"] for record in records)
            processes.append(operator := bench.start_operator(list(spaces), mean_run))
            processes.append(bench.start_workers())
            model_caches = await bench.register_models(jobs, list(spaces))
            await bench.wait_for_fleet()
            watchers = [asyncio.create_task(bench.follow(ns)) for ns in spaces]
            sampler = asyncio.create_task(bench.sample_rss(operator.pid))
            before = await asyncio.to_thread(write_counts)
            t0 = time.time()
            creating = asyncio.create_task(bench.create_jobs(jobs, t0))

            async def finished() -> bool:
                if creating.done():
                    creating.result()  # a failed create ends the run
                return len(bench.seen.phases) >= len(jobs)

            budget = limit if limit is not None else default_limit(jobs, fleet)
            try:
                await until(finished, budget - (time.time() - t0), "every job finished")
                complete = True
            except TimeoutError:
                complete = False
            after = await asyncio.to_thread(write_counts)
            for task in (*watchers, sampler, creating):
                task.cancel()
            await asyncio.gather(*watchers, sampler, creating, return_exceptions=True)
            loads = bench.checkpoint_loads()
            return figures(bench, jobs, fleet, t0, before, after, loads) | {
                "complete": complete,
                "model_caches": model_caches,
                "run": run,
            }
        finally:
            await tear_down(bench, list(spaces), processes)


async def tear_down(bench: Replay, spaces: list[str], processes: list[Process]) -> None:
    """Jobs deleted while the operator runs (it lifts their finalizers; where it does not
    in time, they are dropped once it is stopped), its processes stopped, the namespaces
    and S3 files deleted. Never raises: the figures outlive a failed clean-up."""
    try:
        await asyncio.gather(*(clean_up(bench.api, namespace) for namespace in spaces))
    except Exception as error:  # noqa: BLE001 - reported, then cleaned up without it
        print(f"replay: jobs not deleted through the operator: {error!r}", file=sys.stderr)
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    try:
        for namespace in spaces:
            await bench.drop_finalizers(namespace)
        for namespace in [*spaces, bench.run]:
            await bench.core.delete_namespace(namespace, _request_timeout=30)
        s3 = boto3.resource("s3").Bucket(MODELS_BUCKET)
        await asyncio.to_thread(lambda: s3.objects.filter(Prefix=f"bench/{bench.run}/").delete())
    except Exception as error:  # noqa: BLE001 - reported; what is left is named by the run
        print(f"replay: {bench.run} not cleaned up: {error!r}", file=sys.stderr)


def figures(
    bench: Replay,
    jobs: Sequence[Job],
    fleet: Fleet,
    t0: float,
    before: dict[str, float],
    after: dict[str, float],
    loads: int,
) -> dict[str, Any]:
    """OUT.json's figures, every time in trace seconds."""
    speedup = fleet.speedup
    records = bench.records()
    ran = [(job, records[job.uid]) for job in jobs if job.uid in records]
    waits = [(record["taken"] - t0) * speedup - job.t for job, record in ran]
    # The replay's own part of the waits: from a job's `t` to its create's answer.
    lags = [(job.created - t0) * speedup - job.t for job in jobs if job.created]
    turnarounds = [gap * speedup for gap in worker_turnarounds(ran)]
    done = [record["done"] for _, record in ran]
    writes = sum(after[kind] - before[kind] for kind in after)
    versions = [len(v) for v in bench.seen.versions.values()]
    percentile = bound.percentile
    count = max(len(jobs), 1)
    return {
        "jobs": len(jobs),
        "succeeded": sum(1 for phase in bench.seen.phases.values() if phase == "Succeeded"),
        "checkpoint_loads": loads,
        "job_loads_recorded": sum(1 for _, record in ran if record["load"] != "hot"),
        "p50_wait_s": round(percentile(waits, 50), 2),
        "p99_wait_s": round(percentile(waits, 99), 2),
        "makespan_s": round((max(done) - t0) * speedup, 1) if done else None,
        "apiserver_writes_per_job": round(writes / count, 2),
        "generationjob_versions_per_job": round(sum(versions) / count, 2),
        "operator_max_rss_mib": round(bench.max_rss_kib / 1024, 1),
        "create_lag_s": {f"p{q}": round(percentile(lags, q), 2) for q in (50, 99)},
        "turnaround_s": {f"p{q}": round(percentile(turnarounds, q), 2) for q in (50, 99)},
        "revision": revision(),
        "fleet": vars(fleet),
        "step_seconds": STEP_SECONDS,
    }


def worker_turnarounds(ran: Sequence[tuple[Job, dict[str, Any]]]) -> list[float]:
    """Wall seconds from a worker's job done to its next job taken, where that next job
    had been created before: the operator's turnaround while jobs wait."""
    by_worker: dict[str, list[tuple[Job, dict[str, Any]]]] = {}
    for job, record in sorted(ran, key=lambda pair: pair[1]["taken"]):
        by_worker.setdefault(record["worker"], []).append((job, record))
    return [
        after["taken"] - before["done"]
        for runs in by_worker.values()
        for (_, before), (job, after) in pairwise(runs)
        if job.created < before["done"]
    ]


def revision() -> str:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT, capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return described.stdout.strip() or "unknown"


def markdown(result: dict[str, Any], command: str) -> str:
    reference, fleet = result["reference"], result["fleet"]
    belady = reference["belady"]["checkpoint_loads"]
    rows = [
        ("replay through the operator", result),
        *((f"{p.replace('_', '-')} (zero-overhead)", reference[p]) for p in bound.POLICIES),
    ]
    table = "\n".join(
        f"| {label} | {r['checkpoint_loads']} | {r['checkpoint_loads'] / belady:.2f}x "
        f"| {r['p50_wait_s']} | {r['p99_wait_s']} | {r['makespan_s']} |"
        for label, r in rows
    )
    loads = " / ".join(f"{average:.2f}" for average in os.getloadavg())
    lag, turnaround = result["create_lag_s"], result["turnaround_s"]
    return f"""# Trace replay

Generated by `{command}` on {time.strftime("%Y-%m-%d")} at revision {result["revision"]}.

- Fleet: {fleet["workers"]} workers of {fleet["concurrency"]} slot(s), {fleet["hot_slots"]} hot
  slots each, {fleet["load_seconds"]:g} s per checkpoint load, speedup {fleet["speedup"]:g}.
- Jobs: {result["jobs"]}, Succeeded: {result["succeeded"]}{
        "" if result["complete"] else " (the run hit its time limit)"
    }.
- Machine: {os.cpu_count()} cores shared by the whole local stack and other work; load
  averages (1 / 5 / 15 min) at the end: {loads}.

The replay runs the real operator and protocol (Leases, queues, results, S3 outputs) on
simulated workers. Every time is divided by the speedup and every figure is in trace
seconds, so a real second of overhead (dispatch, status writes, results, uploads) weighs
`speedup` trace seconds. Service times are rounded to {result["step_seconds"]} s steps.
Wait: from a job's `t` to a worker taking it, before its model load. The other rows are
bench/bound.py's zero-overhead simulations of the same trace and fleet (dispatch
instant, service exact).

| placement | checkpoint loads | vs Belady | p50 wait (s) | p99 wait (s) | makespan (s) |
|---|---|---|---|---|---|
| Belady, arrival order (one cache of N x K) | {belady} | 1.00x | | | |
{table}

- API-server writes per job (GenerationJobs and Events, every client of the shared API
  server in the window): {result["apiserver_writes_per_job"]}.
- The jobs' own resource versions per job (watch, create included):
  {result["generationjob_versions_per_job"]}.
- Operator peak RSS: {result["operator_max_rss_mib"]} MiB.
- The replay's own share of the waits (a job's `t` to its create's answer), p50 / p99:
  {lag["p50"]} / {lag["p99"]} s.
- A worker's turnaround (its job done to its next job taken, when that job was waiting
  already), p50 / p99: {turnaround["p50"]} / {turnaround["p99"]} s.
- Checkpoint loads the workers recorded for jobs: {result["job_loads_recorded"]} (the
  metric counts warm orders too).

Reproduce: `make up-infra && make bench-replay` (its trace: `python -m bench.traces
--jobs 3000`).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", help="JSON lines: t, model, lora, seconds, tenant?, tier?")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--hot-slots", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, required=True)
    parser.add_argument("--speedup", type=float, default=1.0)
    parser.add_argument("--json", required=True, help="write the figures here")
    parser.add_argument("--markdown", help="also write a table here")
    parser.add_argument("--limit", type=float, help="wall seconds at most (default: by the trace)")
    args = parser.parse_args(argv)
    fleet = Fleet(args.workers, args.concurrency, args.hot_slots, args.load_seconds, args.speedup)
    records = load(args.trace)
    result = asyncio.run(replay(records, fleet, args.limit))
    result["reference"] = bound.reference(
        records, fleet.workers, fleet.concurrency, fleet.hot_slots, fleet.load_seconds
    )
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        command = "bench/replay.py " + " ".join(sys.argv[1:] if argv is None else argv)
        Path(args.markdown).write_text(markdown(result, command))
    print(json.dumps({k: v for k, v in result.items() if k != "reference"}, indent=2))
    if not result["complete"] or result["succeeded"] < result["jobs"]:
        sys.exit("replay: not every job succeeded in time")


if __name__ == "__main__":
    main()
