"""Autoscaling benchmark: diffleet's autoscaler against KEDA 2.21, on the local stack.

One operator from this tree serves a fresh namespace (its fleet namespace too) on queues
of its own (DIFFLEET_QUEUE_PREFIX: the namespace). Two pools of simulated workers
(DIFFLEET_WORKER_SIMULATE=true; the stack's pod runner hosts them in its own process, each
with its pod's settings), each with its own GPU type so that a job names the one pool it is for:

- *diffleet*: a GPUPool (min 0, max M) that the operator's autoscaler sizes;
- *KEDA*: a Deployment of the same worker pod, scaled by a KEDA ScaledObject with its
  RabbitMQ scaler in HTTP mode summing the tier's tenant queues the jobs wait in (a
  regex over queue names, operation sum: the sum a cluster of many job namespaces needs;
  QueueLength: ready + unacknowledged messages, since the operator holds admitted jobs
  unacknowledged in its prefetch windows; target 1 message per worker, as
  targetJobsPerWorker 1), at KEDA's default pollingInterval (30 s) and at 1 s. KEDA's
  operator activates 0 -> 1; 1 -> N is kube-controller-manager's HPA controller (15 s
  sync) reading KEDA's metrics adapter.
  Both idle delays are the GPUPool's scaleDownDelaySeconds: KEDA's cooldownPeriod and the
  HPA's scale-down stabilization window.

Bursts: N jobs created at once (32 concurrent creates) into a pool at zero, rounds
alternating the three systems so that each sees the machine's load of the moment. A KEDA
burst starts at a random point of its polling cycle. From the first create: (a) desired
replicas written (GPUPool status.desiredReplicas, or the Deployment's spec.replicas) above
0, and at the target M; (b) the first worker ready (its Lease announced); (c) every job
Succeeded. After each burst the pool returns to zero before the next.

Scale-in: per system, a queue that shrinks while jobs run (a few long jobs and many short
ones): busy workers interrupted (a worker pod deleted while its Lease lists jobs in flight,
or a job is Scheduled or Running on it: the Lease's list is renewed every 2 s) and jobs
requeued (attempts above 1), in every burst too.

Writes bench/results/autoscale.md. Needs `make up-infra`; the processes of `make up`, if
running, are stopped for the run and started again after, as a test session does (the
platform's operator serves every namespace and would take the jobs). KEDA is built
(hack/build-keda.sh) and started by `make bench-autoscale`, and stopped at the end.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from bench.dispatch import clean_up, deadline, register_model, spawn_operator
from bench.keda import KEDA_VERSION, kubectl, running_keda
from diffleet_core import API_GROUP, API_VERSION, TIER_LABEL
from diffleet_core.fleet import (
    GPUPOOL_LABEL,
    INVENTORY_ANNOTATION,
    PART_OF,
    PART_OF_LABEL,
    POOL_LABEL,
    WORKER_LABEL,
    WorkerInventory,
)
from diffleet_core.queues import Topology
from diffleet_core.resources.generation_job import Tier
from diffleet_core.resources.gpu_pool import (
    FLEET_LABEL,
    NODE_POOL_LABEL,
    EnvVar,
    GPUPoolSpec,
    WorkerTemplate,
)
from diffleet_core.resources.gpu_pool import KIND as GPUPOOL_KIND
from diffleet_core.resources.gpu_pool import PLURAL as GPUPOOL_PLURAL
from diffleet_core.settings import get_settings
from diffleet_operator.autoscaler.pods import worker_pod

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "autoscale.md"
NOTES = "<!-- Notes: kept as they are when bench/autoscale.py writes new figures above. -->"
# Issue 13's targets for diffleet's decision (desired replicas written), in seconds.
TARGET_P50, TARGET_P99 = 2.0, 5.0
TIER = Tier.STANDARD
# Simulated timings (seconds): a job of `steps` steps runs steps * STEP_SECONDS.
STEP_SECONDS = 0.2
BURST_STEPS = 2
SHORT_STEPS, LONG_STEPS = 5, 100
SHRINK_LONG, SHRINK_SHORT = 4, 12
SCALE_DOWN_DELAY_SECONDS = 5
ON_WORKER = {"Scheduled", "Running"}
KEDA_DEFAULT_POLLING_SECONDS = 30
WORKER_IMAGE = "diffleet/gpu-worker:local"  # the pod runner runs the command, not the image
WORKER_RBAC = ROOT / "manifests" / "rbac" / "worker.yaml"
# The operator of `make up`: it serves every namespace, so it would admit the benchmark's
# jobs to its own queues. As a test session does, the benchmark uninstalls the platform
# for its run and installs it again after.
# The bare command: the pod runner hosts the simulated workers in its process, so a burst of
# pods does not mean a burst of Python interpreters on the benchmark's two cores.
WORKER_COMMAND = ["diffleet-worker"]


@dataclass(frozen=True)
class System:
    name: str
    pool: str  # the pool its workers announce (and the GPU type its jobs name)
    polling: int = 0  # KEDA's pollingInterval; 0: diffleet's own autoscaler

    @property
    def keda(self) -> bool:
        return self.polling > 0


@dataclass
class Burst:
    system: str
    decided: float  # first desired replicas above 0
    at_target: float  # desired replicas at the target
    first_ready: float  # first Lease of the pool
    done: float  # every job Succeeded
    interrupted: int  # busy workers whose pod was deleted
    requeued: int  # jobs run more than once


@dataclass
class Record:
    """What the watches saw, in time.monotonic() seconds."""

    desired: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    lease_seen: dict[str, tuple[float, str]] = field(default_factory=dict)  # name: (t, pool)
    busy: dict[str, bool] = field(default_factory=dict)  # worker: its Lease lists jobs
    running: dict[str, str] = field(default_factory=dict)  # job Scheduled or Running: worker
    deleted: dict[str, tuple[float, bool]] = field(default_factory=dict)  # pod: (t, busy)
    pods: dict[str, str] = field(default_factory=dict)  # live pod: its pool
    succeeded: dict[str, float] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    def first(self, pool: str, since: float, at_least: int) -> float | None:
        return next(
            (t for t, n in self.desired.get(pool, []) if t >= since and n >= at_least), None
        )


def resource_version(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj["metadata"]["resourceVersion"])
    return str(obj.metadata.resource_version)


async def follow(
    list_call: Callable[..., Awaitable[Any]],
    on_event: Callable[[str, Any], None],
    *args: Any,
    **kwargs: Any,
) -> None:
    """Feeds every watch event to on_event; resumes when the server ends a watch, and
    lists afresh when its resource version expired."""
    version = ""
    while True:
        stream = watch.Watch()
        try:
            async with stream.stream(
                list_call, *args, resource_version=version, timeout_seconds=60, **kwargs
            ) as events:
                async for event in events:
                    version = resource_version(event["object"])
                    on_event(event["type"], event["object"])
        except ApiException as error:
            if error.status != 410:
                raise
            version = ""


def watches(api: client.ApiClient, namespace: str, record: Record) -> list[asyncio.Task[None]]:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    apps, coordination = client.AppsV1Api(api), client.CoordinationV1Api(api)

    def desired(pool: str, replicas: int) -> None:
        series = record.desired.setdefault(pool, [])
        if not series or series[-1][1] != replicas:
            series.append((time.monotonic(), replicas))

    def on_pool(kind: str, pool: dict[str, Any]) -> None:
        if kind != "DELETED":
            desired(pool["metadata"]["name"], (pool.get("status") or {}).get("desiredReplicas", 0))

    def on_deployment(kind: str, deployment: client.V1Deployment) -> None:
        if kind != "DELETED":
            desired(deployment.metadata.labels[POOL_LABEL], deployment.spec.replicas or 0)

    def on_lease(kind: str, lease: client.V1Lease) -> None:
        name = lease.metadata.name
        if kind == "DELETED":
            record.busy.pop(name, None)
            return
        record.lease_seen.setdefault(name, (time.monotonic(), lease.metadata.labels[POOL_LABEL]))
        raw = (lease.metadata.annotations or {}).get(INVENTORY_ANNOTATION)
        inventory = WorkerInventory.model_validate_json(raw) if raw else None
        record.busy[name] = bool(inventory and inventory.jobs_in_flight)

    def on_pod(kind: str, pod: client.V1Pod) -> None:
        name, labels = pod.metadata.name, pod.metadata.labels or {}
        if kind == "DELETED":
            record.pods.pop(name, None)
        else:
            record.pods[name] = labels.get(GPUPOOL_LABEL) or labels.get(POOL_LABEL, "")
        if (kind == "DELETED" or pod.metadata.deletion_timestamp) and name not in record.deleted:
            busy = record.busy.get(name, False) or name in record.running.values()
            record.deleted[name] = (time.monotonic(), busy)

    def on_job(kind: str, job: dict[str, Any]) -> None:
        status = job.get("status") or {}
        name = job["metadata"]["name"]
        record.attempts[name] = max(record.attempts.get(name, 0), status.get("attempts", 0))
        if kind != "DELETED" and status.get("phase") in ON_WORKER and status.get("worker"):
            record.running[name] = status["worker"]
        else:
            record.running.pop(name, None)
        if status.get("phase") == "Succeeded":
            record.succeeded.setdefault(name, time.monotonic())

    return [
        asyncio.create_task(task)
        for task in (
            follow(custom.list_cluster_custom_object, on_pool, API_GROUP, API_VERSION, "gpupools"),
            follow(apps.list_namespaced_deployment, on_deployment, namespace),
            follow(coordination.list_namespaced_lease, on_lease, namespace,
                   label_selector=f"{WORKER_LABEL}=true"),
            follow(core.list_namespaced_pod, on_pod, namespace),
            follow(custom.list_namespaced_custom_object, on_job,
                   API_GROUP, API_VERSION, namespace, "generationjobs"),
        )
    ]  # fmt: skip


def pool_spec(gpu_type: str, max_replicas: int, prefix: str) -> GPUPoolSpec:
    """One pool of simulated workers on the static kwok H100 nodes (16 GPUs), for both
    systems: the KEDA Deployment's pod is this pool's worker pod too."""
    env = {
        "DIFFLEET_WORKER_SIMULATE": "true",
        "DIFFLEET_QUEUE_PREFIX": prefix,
        "DIFFLEET_WORKER_SIM_STEP_SECONDS": str(STEP_SECONDS),
        "DIFFLEET_WORKER_SIM_LOAD_SECONDS": "0.5",
    }
    return GPUPoolSpec(
        gpu_type=gpu_type,
        vram_gib=80.0,
        max_replicas=max_replicas,
        scale_down_delay_seconds=SCALE_DOWN_DELAY_SECONDS,
        drain_seconds=30,
        node_selector={NODE_POOL_LABEL: "h100"},
        template=WorkerTemplate(
            command=WORKER_COMMAND, env=[EnvVar(name=k, value=v) for k, v in env.items()]
        ),
    )


def gpu_pool(system: System, spec: GPUPoolSpec, fleet: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": GPUPOOL_KIND,
        "metadata": {"name": system.pool, "labels": {FLEET_LABEL: fleet}},
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


def deployment(pool: str, spec: GPUPoolSpec, namespace: str) -> dict[str, Any]:
    """KEDA's scale target: a Deployment (replicas 0) of the worker pod the operator would
    make for a GPUPool named after the KEDA pool, without the GPUPool's label and owner
    (the operator must not take these pods for its own)."""
    pod = worker_pod(
        name="unused", namespace=namespace, pool=pool, pool_uid="", spec=spec,
        image=WORKER_IMAGE,
    )  # fmt: skip
    labels = {PART_OF_LABEL: PART_OF, POOL_LABEL: pool}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": pool, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }


def scaled_object(pool: str, namespace: str, queues: str, max_replicas: int) -> dict[str, Any]:
    """KEDA's RabbitMQ scaler in HTTP mode over the tier's tenant queues (`queues`: a regex,
    their lengths summed), one worker per message; its idle delays (cooldownPeriod, the
    HPA's scale-down stabilization) are the GPUPool's scaleDownDelaySeconds."""
    # The management API with the broker's credentials and vhost (`make env`'s URLs).
    amqp = urllib.parse.urlsplit(get_settings().amqp_url)
    management = urllib.parse.urlsplit(os.environ["DIFFLEET_RABBITMQ_MANAGEMENT_URL"])
    host = f"{management.scheme}://{amqp.username}:{amqp.password}@{management.netloc}{amqp.path}"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": pool, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"name": pool},
            "pollingInterval": KEDA_DEFAULT_POLLING_SECONDS,
            "cooldownPeriod": SCALE_DOWN_DELAY_SECONDS,
            "minReplicaCount": 0,
            "maxReplicaCount": max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_DELAY_SECONDS}
                    }
                }
            },
            "triggers": [
                {
                    "type": "rabbitmq",
                    "metadata": {
                        "protocol": "http",
                        "host": host,
                        "queueName": queues,
                        "useRegex": "true",
                        "operation": "sum",
                        "mode": "QueueLength",
                        "value": "1",
                    },
                }
            ],
        },
    }


@dataclass
class Bench:
    """The benchmark's namespace, its clients and what its watches saw."""

    api: client.ApiClient
    namespace: str
    record: Record

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def live_pods(self, pool: str) -> int:
        return sum(1 for p in self.record.pods.values() if p == pool)

    def desired_now(self, pool: str) -> int:
        series = self.record.desired.get(pool)
        return series[-1][1] if series else 0

    async def idle(self, system: System) -> None:
        """Waits until the system's pool is at zero: desired 0 and no pod left."""

        async def at_zero() -> bool:
            return self.desired_now(system.pool) == 0 and self.live_pods(system.pool) == 0

        await deadline(at_zero, 300, f"{system.name}: pool back at zero")

    async def create_jobs(self, tag: str, gpu_type: str, steps: list[int]) -> list[str]:
        gate = asyncio.Semaphore(32)
        names = [f"{tag}-{i:04d}" for i in range(len(steps))]

        async def create(name: str, job_steps: int) -> None:
            body = {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": "GenerationJob",
                "metadata": {"name": name},
                "spec": {"model": "m", "prompt": "a red square", "steps": job_steps,
                         "gpuClass": gpu_type},
            }  # fmt: skip
            async with gate:
                await self.custom.create_namespaced_custom_object(
                    API_GROUP, API_VERSION, self.namespace, "generationjobs", body
                )

        await asyncio.gather(*(create(n, s) for n, s in zip(names, steps, strict=True)))
        return names

    async def run_jobs(
        self, system: System, tag: str, steps: list[int]
    ) -> tuple[float, float, tuple[int, int]]:
        """Creates the jobs into the idle pool and waits for every one to succeed, then
        for the pool to return to zero. Returns the first create, the last success, and
        the busy workers deleted and jobs requeued meanwhile."""
        await self.idle(system)
        if system.keda:  # a burst lands anywhere in KEDA's polling cycle
            await asyncio.sleep(random.uniform(0, system.polling))  # noqa: S311
        start = time.monotonic()
        names = await self.create_jobs(tag, system.pool, steps)

        async def all_succeeded() -> bool:
            check_no_platform_operator()  # one started meanwhile would strand the jobs
            return all(name in self.record.succeeded for name in names)

        await deadline(all_succeeded, 600, f"{system.name}: every job of {tag} Succeeded")
        done = max(self.record.succeeded[name] for name in names)
        await self.idle(system)
        busy = sum(1 for t, was_busy in self.record.deleted.values() if t >= start and was_busy)
        requeued = sum(1 for name in names if self.record.attempts.get(name, 0) > 1)
        await clean_up(self.api, self.namespace)
        return start, done, (busy, requeued)

    async def burst(self, system: System, tag: str, jobs: int, target: int) -> Burst:
        start, done, (busy, requeued) = await self.run_jobs(system, tag, [BURST_STEPS] * jobs)
        ready = [t for t, pool in self.record.lease_seen.values() if pool == system.pool]

        def since_start(t: float | None) -> float:
            return math.nan if t is None else t - start

        return Burst(
            system=system.name,
            decided=since_start(self.record.first(system.pool, start, 1)),
            at_target=since_start(self.record.first(system.pool, start, target)),
            first_ready=since_start(min((t for t in ready if t >= start), default=None)),
            done=done - start,
            interrupted=busy,
            requeued=requeued,
        )

    async def shrink(self, system: System, tag: str) -> tuple[int, int]:
        """A queue that empties while long jobs still run: the scale-in that follows."""
        steps = [LONG_STEPS] * SHRINK_LONG + [SHORT_STEPS] * SHRINK_SHORT
        _, _, interrupted = await self.run_jobs(system, tag, steps)
        return interrupted


def platform_operator_running() -> bool:
    """`make status` says that the release's operator runs."""
    status = subprocess.run(
        [str(ROOT / "hack" / "stack.sh"), "status"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return any(line.split()[:2] == ["operator", "running"] for line in status.stdout.splitlines())


def check_no_platform_operator() -> None:
    if platform_operator_running():
        raise RuntimeError(
            "the stack's platform operator (make up) started during the run: it serves every"
            " namespace and took the benchmark's jobs"
        )


def stack(command: str, timeout: float) -> None:
    subprocess.run([str(ROOT / "hack" / "stack.sh"), command], check=True, timeout=timeout)


def worker_rbac(namespace: str) -> dict[str, Any]:
    """manifests/rbac/worker.yaml (the workers' ServiceAccount and Role), in `namespace`."""
    objects = [obj for obj in yaml.safe_load_all(WORKER_RBAC.read_text()) if obj]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "List", "items": objects}


def start_operator(namespace: str) -> subprocess.Popen[bytes]:
    """The operator from this tree, serving the benchmark's namespace (its fleet's too)."""
    logs = ROOT / ".diffleet" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return spawn_operator(namespace, logs / f"{namespace}-operator.log")


async def prepare(bench: Bench, ours: System | None, keda_pool: str, max_replicas: int) -> None:
    kubectl("create", "-f", "-", stdin=json.dumps(worker_rbac(bench.namespace)))
    await register_model(bench.custom, bench.namespace)
    if ours:
        await bench.custom.create_cluster_custom_object(
            API_GROUP, API_VERSION, GPUPOOL_PLURAL,
            gpu_pool(ours, pool_spec(ours.pool, max_replicas, bench.namespace), bench.namespace),
        )  # fmt: skip
    queues = Topology(bench.namespace).tenant_queues_regex(TIER)
    spec = pool_spec(keda_pool, max_replicas, bench.namespace)
    for obj in (
        deployment(keda_pool, spec, bench.namespace),
        scaled_object(keda_pool, bench.namespace, queues, max_replicas),
    ):
        kubectl("create", "-f", "-", stdin=json.dumps(obj))


async def tear_down(bench: Bench, ours: System | None, keda_pool: str) -> None:
    """Removes what KEDA and the operator hold finalizers on while they still run."""
    custom = bench.custom
    with contextlib.suppress(ApiException):
        await custom.delete_namespaced_custom_object(
            "keda.sh", "v1alpha1", bench.namespace, "scaledobjects", keda_pool
        )
    if ours:
        with contextlib.suppress(ApiException):
            await custom.delete_cluster_custom_object(
                API_GROUP, API_VERSION, GPUPOOL_PLURAL, ours.pool
            )

    async def released() -> bool:
        pools = await custom.list_cluster_custom_object(
            API_GROUP, API_VERSION, GPUPOOL_PLURAL,
            label_selector=f"{FLEET_LABEL}={bench.namespace}",
        )  # fmt: skip
        scaled = await custom.list_namespaced_custom_object(
            "keda.sh", "v1alpha1", bench.namespace, "scaledobjects"
        )
        return not pools["items"] and not scaled["items"]

    await deadline(released, 120, "GPUPool and ScaledObject deleted")
    await clean_up(bench.api, bench.namespace)


async def run(jobs: int, rounds: int, max_replicas: int, with_diffleet: bool) -> None:
    platform_was_up = platform_operator_running()
    if platform_was_up:
        stack("down-platform", timeout=60)
    try:
        await measure(jobs, rounds, max_replicas, with_diffleet)
    finally:
        if platform_was_up:
            stack("up", timeout=300)


async def measure(jobs: int, rounds: int, max_replicas: int, with_diffleet: bool) -> None:
    namespace = f"bench-as-{uuid.uuid4().hex[:6]}"
    ours = System("diffleet", f"{namespace}-dfl") if with_diffleet else None
    keda_pool = f"{namespace}-keda"
    keda_systems = [
        System("KEDA, pollingInterval 30 s", keda_pool, KEDA_DEFAULT_POLLING_SECONDS),
        System("KEDA, pollingInterval 1 s", keda_pool, 1),
    ]
    systems = [*([ours] if ours else []), *keda_systems]
    loads = [load()]
    bursts: list[Burst] = []
    shrinks: dict[str, tuple[int, int]] = {}
    await config.load_kube_config()
    async with client.ApiClient() as api:
        bench = Bench(api, namespace, Record())
        core = client.CoreV1Api(api)
        labels = {TIER_LABEL: TIER.value}
        await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=labels))
        )
        watching = watches(api, namespace, bench.record)
        operator = start_operator(namespace)
        try:
            with running_keda(namespace):
                try:
                    await prepare(bench, ours, keda_pool, max_replicas)
                    for r in range(rounds):
                        # Each round in another order, so no system always goes first.
                        turn = r % len(systems)
                        for system in systems[turn:] + systems[:turn]:
                            if system.keda:
                                polling = {"spec": {"pollingInterval": system.polling}}
                                kubectl("patch", "scaledobject", keda_pool, "-n", namespace,
                                        "--type=merge", "-p", json.dumps(polling))  # fmt: skip
                            tag = f"r{r}-{systems.index(system)}"
                            bursts.append(await bench.burst(system, tag, jobs, max_replicas))
                            print(bursts[-1], flush=True)
                        loads.append(load())
                    for system in (*([ours] if ours else []), keda_systems[1]):
                        tag = f"shrink-{systems.index(system)}"
                        shrinks[system.name] = await bench.shrink(system, tag)
                        print(system.name, "shrink", shrinks[system.name], flush=True)
                finally:
                    await tear_down(bench, ours, keda_pool)
        finally:
            for task in watching:
                task.cancel()
            operator.send_signal(signal.SIGTERM)
            operator.wait(60)
            await core.delete_namespace(namespace)
    loads.append(load())
    RESULTS.write_text(report(bursts, shrinks, jobs, max_replicas, loads) + kept_notes())
    print(RESULTS.read_text())


def kept_notes() -> str:
    """The written notes under NOTES in the results file, which a new run keeps."""
    if not RESULTS.exists():
        return ""
    _, marker, notes = RESULTS.read_text().partition(NOTES)
    return f"\n{marker}{notes}" if marker else ""


def load() -> str:
    return " / ".join(f"{average:.2f}" for average in os.getloadavg())


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def spread(values: list[float]) -> str:
    """p50 and p99 of a figure over the rounds, and its range."""
    measured = [v for v in values if not math.isnan(v)]
    if len(measured) < len(values):
        return f"not reached in {len(values) - len(measured)} of {len(values)}"
    return (
        f"{percentile(measured, 50):.1f} / {percentile(measured, 99):.1f} s "
        f"({min(measured):.1f} to {max(measured):.1f})"
    )


def report(
    bursts: list[Burst],
    shrinks: dict[str, tuple[int, int]],
    jobs: int,
    max_replicas: int,
    loads: list[str],
) -> str:
    names = list(dict.fromkeys(b.system for b in bursts))
    by_system = {name: [b for b in bursts if b.system == name] for name in names}
    rounds = len(by_system[names[0]])
    figures: list[tuple[str, Callable[[Burst], float]]] = [
        ("(a) desired replicas written, above 0", lambda b: b.decided),
        (f"(a) desired replicas at {max_replicas}", lambda b: b.at_target),
        ("(b) first worker ready (Lease announced)", lambda b: b.first_ready),
        (f"(c) all {jobs} jobs done", lambda b: b.done),
    ]
    rows = [
        f"| {label} | " + " | ".join(spread([get(b) for b in by_system[n]]) for n in names) + " |"
        for label, get in figures
    ]
    for label, attribute in (
        ("busy workers interrupted", "interrupted"),
        ("jobs requeued", "requeued"),
    ):
        rows.append(
            f"| {label} (all rounds) | "
            + " | ".join(str(sum(getattr(b, attribute) for b in by_system[n])) for n in names)
            + " |"
        )
    shrink_rows = [
        f"| {name} | {busy} | {requeued} |" for name, (busy, requeued) in shrinks.items()
    ]
    ours = by_system.get("diffleet")
    if ours:
        decided = [b.decided for b in ours]
        interrupted = sum(b.interrupted for b in ours) + shrinks.get("diffleet", (0, 0))[0]
        verdict = (
            f"diffleet against issue 13's targets: decision p50 "
            f"{percentile(decided, 50):.1f} s (target <= {TARGET_P50:g} s), p99 "
            f"{percentile(decided, 99):.1f} s (<= {TARGET_P99:g} s); busy workers "
            f"interrupted {interrupted} (target 0)."
        )
    else:
        verdict = "diffleet's side was not measured in this run (`--keda-only`)."
    return f"""# Autoscaling benchmark

Measured by `bench/autoscale.py` on {time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores; the
local stack (kube-apiserver, etcd, kube-controller-manager, kwok, RabbitMQ, MinIO, the
pod runner), one operator from this tree, KEDA's operator and metrics adapter and this
script on the same machine, which other engineers' work shares: load averages
(1 / 5 / 15 min) before, after each round and at the end: {"; ".join(loads)}.

## Bursts: {jobs} jobs into a pool at zero, {rounds} rounds

Simulated workers (one job at a time, {BURST_STEPS} steps of {STEP_SECONDS} s, 0.5 s cold
model load), at most {max_replicas}, on the static kwok H100 nodes. Times from the first
job's creation; each cell: p50 / p99 over the rounds (min to max).

| figure | {" | ".join(names)} |
|---|{"---|" * len(names)}
{chr(10).join(rows)}

## Scale-in on a shrinking queue

{SHRINK_LONG} long jobs ({LONG_STEPS * STEP_SECONDS:g} s) then {SHRINK_SHORT} short ones
({SHORT_STEPS * STEP_SECONDS:g} s) into the idle pool: the queue empties while the long jobs
still run, and each system scales in. A worker is *interrupted* when its pod is deleted
while its Lease lists jobs in flight or a job is Scheduled or Running on it (it drains on
SIGTERM: a job is requeued only if the drain outlasts the grace period, 30 s here); idle
delay {SCALE_DOWN_DELAY_SECONDS} s on both sides.

| system | busy workers interrupted | jobs requeued |
|---|---|---|
{chr(10).join(shrink_rows)}

{verdict}

## How KEDA runs here

KEDA {KEDA_VERSION} (operator and metrics adapter, built by `hack/build-keda.sh`) runs
beside the stack as local processes (`bench/keda.py`): the adapter is the APIService
`v1beta1.external.metrics.k8s.io` behind an ExternalName Service, and 1 -> N is
kube-controller-manager's HPA controller (default 15 s sync, default scale-up policy:
at most 4 pods or 100% per 15 s). Its ScaledObject: RabbitMQ scaler, HTTP mode,
`mode: QueueLength`, `value: "1"`, summed (`useRegex`, `operation: sum`) over the
tier's tenant queues `<prefix>.jobs.<tier>.<namespace>` (ready + unacknowledged
messages: admitted jobs the operator holds in its prefetch windows count), min 0,
max {max_replicas}, cooldownPeriod and the HPA's scale-down stabilization window
{SCALE_DOWN_DELAY_SECONDS} s. RabbitMQ's management API refreshes queue counts every
5 s (its default collect_statistics_interval), which KEDA's HTTP mode waits on.

Reproduce: `make up-infra && make bench-autoscale`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="bursts per system (2 or more)")
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument(
        "--keda-only", action="store_true", help="KEDA's side alone (no GPUPool is made)"
    )
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds: at least 2, for a p50 and a p99")
    asyncio.run(run(args.jobs, args.rounds, args.max_replicas, not args.keda_only))


if __name__ == "__main__":
    main()
