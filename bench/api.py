"""API benchmark: what the REST front door adds to creating a GenerationJob, against the
local stack (kube-apiserver, PostgreSQL; RabbitMQ and S3 only for the API's readiness).

1. A fresh namespace and an enterprise tenant owning it (created with diffleet-admin's
   functions), its rate limits raised past the benchmark and credits for every job; a
   ModelCache `m` (sd15) to price jobs against. No operator runs: the jobs stay Pending.
2. `diffleet-api` runs as its own process on a free 127.0.0.1 port, its job watcher off
   (`--processes N`: N processes, the clients spread over them as a load balancer would).
3. Rounds, alternating which goes first so both see the same machine load:
   - *API*: 50 clients (aiohttp, keep-alive) share N `POST /v1/jobs` with the member key;
   - *direct*: 50 clients (one kubernetes_asyncio ApiClient, which is aiohttp too) share N
     creates of the same GenerationJob body the API sends to Kubernetes (its spec with
     defaults, its label).
   Per request: client-side latency; per phase: requests/s (N / first start to last end),
   and the CPU time per request of the API processes, this script (the clients),
   PostgreSQL, kube-apiserver and etcd (the last three by process name, so whatever else
   uses them meanwhile is counted too), and kube-apiserver's requests per create (its
   apiserver_request_total, by verb and resource, so an extra read would show). For the
   API, its own `diffleet_api_request_seconds` histogram gives the mean time inside the
   server, so the rest is queueing on the client and the loopback. Before the warm-up,
   10 s with no request in flight give the background CPU of each process.
4. Figures: p50/p99 of each door over all rounds, their ratios, sustained requests/s.

Writes bench/results/api.md, with the machine's load averages (other engineers' tests
share its 2 cores), keeping the notes under its NOTES marker. Bounded: N jobs per phase
and round, every wait has a deadline; the API is stopped and the namespace deleted at
the end (the finalizer the admission policy put on each job dropped first), waiting for
the deletion so that a next run starts on a quiet API server. Not a test:
it never gates CI.
Run: `make bench-api` (needs `make up-infra`; N=1000, 2 rounds by default).
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp
import httpx
from kubernetes_asyncio import client, config

from diffleet_api import admin, tenants
from diffleet_api.submission import new_job_name, wire_spec
from diffleet_api.tokens import Role
from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import generation_job
from diffleet_core.resources.generation_job import GenerationJobSpec, Tier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "api.md"
CLIENTS = 50
SERIAL = 100  # requests per door with one client: the cost of one request, no queueing
REQUEST = {"model": "m", "prompt": "a lighthouse at dusk", "steps": 1}
# Far above what the benchmark takes: the limits are not what is measured.
UNLIMITED = {"requests_per_minute": 10_000_000, "generations_per_hour": 10_000_000}
TIMEOUT_SECONDS = 60.0
HISTOGRAM = "diffleet_api_request_seconds"
NOTES = "<!-- Notes: kept as they are when bench/api.py writes new figures above. -->"
# Processes whose CPU time a phase accounts for, besides the API's and this script's.
SERVICES = {"postgres": "PostgreSQL", "kube-apiserver": "kube-apiserver", "etcd": "etcd"}
IDLE_SECONDS = 10.0  # the background measured with no request in flight
DELETE_SECONDS = 300  # the longest wait for the namespace's deletion at the end


@dataclass
class Phase:
    """One door in one round: per-request latencies and the phase's wall time."""

    door: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: int = 0  # answers other than 201 (their latencies are left out)
    server_seconds: float | None = None  # mean inside the API (its histogram), API only
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per request, by who
    kube_requests: Counter[str] = field(default_factory=Counter)  # kube-apiserver's, by kind

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def load() -> str:
    return " / ".join(f"{average:.2f}" for average in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu() -> dict[str, float]:
    """CPU time so far of every running process of each service, by process name."""
    totals = dict.fromkeys(SERVICES.values(), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name in SERVICES:
            fields = text.rpartition(")")[2].split()
            ticks = int(fields[11]) + int(fields[12])
            totals[SERVICES[name]] += ticks / os.sysconf("SC_CLK_TCK")
    return totals


@dataclass
class CpuMeter:
    """CPU time of the API processes, this script and the services, over a phase."""

    api_pids: list[int]

    def read(self) -> dict[str, float]:
        return {
            "API": sum(cpu_seconds(pid) for pid in self.api_pids),
            "clients": time.process_time(),
            **service_cpu(),
        }

    @staticmethod
    def per_request(
        before: dict[str, float], after: dict[str, float], count: int
    ) -> dict[str, float]:
        return {who: (after[who] - before[who]) / count for who in before}


def apiserver_requests() -> Counter[str]:
    """kube-apiserver's requests so far, as "VERB resource" (its apiserver_request_total;
    the scrape of /metrics itself is not a resource request)."""
    text = subprocess.run(
        ["kubectl", "get", "--raw", "/metrics"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, _, value = line.rpartition(" ")
            verb, resource = (label_value(labels, name) for name in ("verb", "resource"))
            if resource:
                counts[f"{verb} {resource}"] += int(float(value))
    return counts


def label_value(labels: str, name: str) -> str:
    _, found, rest = labels.partition(f'{name}="')
    return rest.partition('"')[0] if found else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def deadline(probe: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not await probe():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not within {seconds:.0f} s")
        await asyncio.sleep(0.2)


async def hammer(
    count: int, request: Callable[[int], Awaitable[bool]], phase: Phase, clients: int
) -> Phase:
    """`clients` concurrent loops share `count` requests; each successful one is timed.
    A loop passes its index to `request` (the API door spreads them over processes)."""
    left = count

    async def loop(index: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            if await request(index):
                phase.latencies.append(time.perf_counter() - started)
            else:
                phase.failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(index) for index in range(clients)))
    phase.seconds = time.perf_counter() - started
    return phase


@dataclass
class Doors:
    """The two ways in: a session per API process (with the key), and a Kubernetes client."""

    sessions: list[aiohttp.ClientSession]
    custom: client.CustomObjectsApi
    namespace: str
    spec: dict[str, object]
    meter: CpuMeter

    async def through_api(self, index: int) -> bool:
        session = self.sessions[index % len(self.sessions)]
        async with session.post("/v1/jobs", json=REQUEST) as answer:
            body = await answer.read()
        if answer.status != 201:
            print(f"POST /v1/jobs: {answer.status} {body[:200]!r}")
        return answer.status == 201

    async def direct(self, _: int) -> bool:
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": generation_job.KIND,
            "metadata": {
                "name": new_job_name(),
                "labels": {"app.kubernetes.io/created-by": "diffleet-api"},
            },
            "spec": self.spec,
        }
        await self.custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, generation_job.PLURAL, body,
            _request_timeout=TIMEOUT_SECONDS,
        )  # fmt: skip
        return True

    async def server_totals(self) -> tuple[float, float]:
        """Sum and count of the API processes' own timings of successful `POST /v1/jobs`."""
        totals = {"sum": 0.0, "count": 0.0}
        labels = 'method="POST",route="/v1/jobs",status="201"'
        for session in self.sessions:
            async with session.get("/metrics") as answer:
                text = await answer.text()
            for line in text.splitlines():
                for kind in totals:
                    if line.startswith(f"{HISTOGRAM}_{kind}{{") and labels in line:
                        totals[kind] += float(line.rpartition(" ")[2])
        return totals["sum"], totals["count"]

    async def api_phase(self, count: int, clients: int = CLIENTS) -> Phase:
        sum_before, count_before = await self.server_totals()
        requests_before = apiserver_requests()
        cpu_before = self.meter.read()
        phase = await hammer(count, self.through_api, Phase("API", clients), clients)
        phase.cpu = self.meter.per_request(cpu_before, self.meter.read(), count)
        phase.kube_requests = apiserver_requests() - requests_before
        sum_after, count_after = await self.server_totals()
        if count_after > count_before:
            phase.server_seconds = (sum_after - sum_before) / (count_after - count_before)
        return phase

    async def direct_phase(self, count: int, clients: int = CLIENTS) -> Phase:
        requests_before = apiserver_requests()
        cpu_before = self.meter.read()
        phase = await hammer(count, self.direct, Phase("direct", clients), clients)
        phase.cpu = self.meter.per_request(cpu_before, self.meter.read(), count)
        phase.kube_requests = apiserver_requests() - requests_before
        del phase.cpu["API"]  # idle, but for its readiness probes
        return phase


@dataclass
class Tenant:
    namespace: str
    key: str


def make_tenant(namespace: str, credits: int) -> Tenant:
    """An enterprise tenant owning `namespace`, as `diffleet-admin tenants create` makes
    one, with a member key."""
    asyncio.run(admin.ensure_namespace(namespace, Tier.ENTERPRISE))
    tenant_id = f"{namespace}-{uuid.uuid4().hex[:4]}"
    with admin.connect() as connection:
        tenants.create_tenant(connection, tenant_id, namespace, Tier.ENTERPRISE, Decimal(credits))
        _, key = tenants.create_key(connection, tenant_id, "bench", Role.MEMBER)
    return Tenant(namespace, key)


def spawn_api(namespace: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DIFFLEET_QUEUE_PREFIX": namespace,
        "DIFFLEET_API_PORT": str(port),
        "DIFFLEET_API_WATCHER": "false",
        "DIFFLEET_API_TIER_LIMITS": json.dumps({Tier.ENTERPRISE.value: UNLIMITED}),
    }
    with log.open("ab") as out:
        return subprocess.Popen(["diffleet-api"], env=env, stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


async def model_cache(custom: client.CustomObjectsApi, namespace: str) -> None:
    """A ModelCache the API prices jobs against (never verified: no operator runs)."""
    body = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "ModelCache",
        "metadata": {"name": "m"},
        "spec": {"source": f"s3://diffleet-models/bench/{namespace}/m.safetensors",
                 "format": "safetensors", "baseModel": "sd15"},
    }  # fmt: skip
    await custom.create_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, "modelcaches", body, _request_timeout=TIMEOUT_SECONDS
    )


@dataclass
class Api:
    """The API processes under test: their URLs and process ids."""

    urls: list[str]
    pids: list[int]


@dataclass
class Measured:
    phases: list[Phase]
    loads: str
    idle: dict[str, float]  # CPU seconds per second of each, with no requests


async def measure(api: Api, tenant: Tenant, jobs: int, rounds: int) -> Measured:
    """Warms both doors up, then runs the rounds; returns the phases and the loads."""
    await config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CLIENTS
    headers = {"Authorization": f"Bearer {tenant.key}"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    sessions = [
        aiohttp.ClientSession(
            base_url=url,
            headers=headers,
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=CLIENTS),
        )
        for url in api.urls
    ]
    try:
        async with client.ApiClient(configuration) as kube:
            custom = client.CustomObjectsApi(kube)
            await model_cache(custom, tenant.namespace)
            spec = wire_spec(GenerationJobSpec.model_validate(REQUEST))
            doors = Doors(sessions, custom, tenant.namespace, spec, CpuMeter(api.pids))
            # Before the warm-up: an idle pause later would outlast the API's keep-alive.
            idle = await idle_cpu(doors.meter)
            await doors.api_phase(CLIENTS)
            await doors.direct_phase(CLIENTS)
            loads = [load()]
            phases = [await doors.api_phase(SERIAL, 1), await doors.direct_phase(SERIAL, 1)]
            for index in range(rounds):
                order = [doors.api_phase, doors.direct_phase]
                for run in order if index % 2 == 0 else order[::-1]:
                    phases.append(await run(jobs))
                    print(f"round {index + 1}: {phases[-1].door} {phases[-1].rate:.0f} req/s")
                loads.append(load())
    finally:
        await asyncio.gather(*(session.close() for session in sessions))
    return Measured(phases, "; ".join(loads), idle)


async def idle_cpu(meter: CpuMeter) -> dict[str, float]:
    """What each process spends per second with no request in flight: the background
    that every phase's CPU per request also holds, spread over its requests."""
    before, started = meter.read(), time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    after, seconds = meter.read(), time.monotonic() - started
    return {who: (after[who] - before[who]) / seconds for who in before if who != "clients"}


def run(jobs: int, rounds: int, processes: int) -> None:
    namespace = f"bench-api-{uuid.uuid4().hex[:6]}"
    logs = ROOT / ".diffleet" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    try:
        tenant = make_tenant(namespace, credits=(jobs * rounds + CLIENTS + SERIAL) * 2)
        ports = [free_port() for _ in range(processes)]
        for index, port in enumerate(ports):
            log = logs / f"{namespace}-api-{index}.log"
            started.append(spawn_api(namespace, port, log))
        api = Api([f"http://127.0.0.1:{port}" for port in ports], [p.pid for p in started])

        async def ready() -> bool:
            if any(process.poll() is not None for process in started):
                raise RuntimeError(f"diffleet-api exited; see {logs}/{namespace}-api-*.log")
            try:
                async with httpx.AsyncClient(timeout=5) as probe:
                    answers = [await probe.get(f"{url}/readyz") for url in api.urls]
            except httpx.TransportError:
                return False
            return all(answer.status_code == 200 for answer in answers)

        asyncio.run(deadline(ready, 120, "diffleet-api ready"))
        measured = asyncio.run(measure(api, tenant, jobs, rounds))
    finally:
        for process in started:
            stop(process)
        asyncio.run(release(namespace))
        # Waited for, so that the next run's background is not this namespace's deletion.
        subprocess.run(
            ["kubectl", "delete", "namespace", namespace, f"--timeout={DELETE_SECONDS}s"],
            check=False, capture_output=True, timeout=DELETE_SECONDS + 30,
        )  # fmt: skip
    RESULTS.write_text(report(measured, jobs, processes) + kept_notes())
    print(RESULTS.read_text())


def kept_notes() -> str:
    """The written notes under NOTES in the results file, which a new run keeps."""
    if not RESULTS.exists():
        return ""
    _, marker, notes = RESULTS.read_text().partition(NOTES)
    return f"\n{marker}{notes}" if marker else ""


async def release(namespace: str) -> None:
    """Drops the operator's finalizer from every job of the namespace (the admission
    policy puts it on at creation; no operator runs here to take it off), so that
    deleting the namespace can finish."""
    await config.load_kube_config()
    async with client.ApiClient() as kube:
        custom = client.CustomObjectsApi(kube)
        listed = await custom.list_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, generation_job.PLURAL,
            _request_timeout=TIMEOUT_SECONDS,
        )  # fmt: skip
        gate = asyncio.Semaphore(16)

        async def drop(name: str) -> None:
            async with gate:
                # _content_type is a runtime keyword that the bundled stubs do not declare.
                await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                    API_GROUP, API_VERSION, namespace, generation_job.PLURAL, name,
                    {"metadata": {"finalizers": None}},
                    _content_type="application/merge-patch+json",
                    _request_timeout=TIMEOUT_SECONDS,
                )  # fmt: skip

        names = [item["metadata"]["name"] for item in listed["items"]]
        await asyncio.gather(*(drop(name) for name in names))


def summary(phases: list[Phase], door: str, clients: int) -> dict[str, float]:
    mine = [phase for phase in phases if phase.door == door and phase.clients == clients]
    latencies = [latency for phase in mine for latency in phase.latencies]
    return {
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "rate": sum(len(p.latencies) for p in mine) / sum(p.seconds for p in mine),
    }


def milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def phase_row(phase: Phase) -> str:
    server = f"{phase.server_seconds * 1000:.0f} ms" if phase.server_seconds else "-"
    cpu = " | ".join(milliseconds(phase.cpu.get(who)) for who in CPU_COLUMNS)
    kube = sum(phase.kube_requests.values()) / (len(phase.latencies) + phase.failures)
    return (
        f"| {phase.clients} | {phase.door} | {percentile(phase.latencies, 50) * 1000:.0f} ms"
        f" | {percentile(phase.latencies, 99) * 1000:.0f} ms | {phase.rate:.0f}"
        f" | {server} | {cpu} | {kube:.2f} | {phase.failures} |"
    )


CPU_COLUMNS = ["API", "clients", *SERVICES.values()]
TABLE_HEAD = (
    "| clients | door | p50 | p99 | requests/s | in server (mean) | CPU: API | clients"
    " | PostgreSQL | kube-apiserver | etcd | kube requests | failed |\n" + "|---" * 13 + "|"
)


def other_requests(phases: list[Phase], door: str) -> str:
    """kube-apiserver's requests in a door's phases besides the creates, per create."""
    mine = [phase for phase in phases if phase.door == door]
    creates = sum(len(phase.latencies) + phase.failures for phase in mine)
    counts = sum((phase.kube_requests for phase in mine), Counter[str]())
    counts.pop(f"POST {generation_job.PLURAL}", None)
    listed = ", ".join(f"{kind} {count / creates:.3f}" for kind, count in counts.most_common())
    return listed or "none"


def report(measured: Measured, jobs: int, processes: int) -> str:
    phases = measured.phases
    api, direct = summary(phases, "API", CLIENTS), summary(phases, "direct", CLIENTS)
    one_api, one_direct = summary(phases, "API", 1), summary(phases, "direct", 1)
    rate_ratio = api["rate"] / direct["rate"]
    rows = "\n".join(phase_row(phase) for phase in phases)
    idle = ", ".join(f"{who} {seconds * 1000:.0f}" for who, seconds in measured.idle.items())
    served = (
        "one `diffleet-api` process" if processes == 1 else f"{processes} `diffleet-api` processes"
    )
    return f"""# API benchmark

Measured by `bench/api.py` on {time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores; the
local stack (kube-apiserver, etcd, PostgreSQL, RabbitMQ, MinIO), {served}
(uvicorn, one event loop each, watcher off) and this script's clients all on the same
machine, which other engineers' tests share: load averages (1 / 5 / 15 min) before the
measured phases and after each round: {measured.loads}.

{CLIENTS} concurrent clients, {jobs} creates per door and round, rounds alternating
which door goes first. *API*: `POST /v1/jobs` (aiohttp, keep-alive) with an enterprise
tenant's member key, rate limits raised past the run. *direct*: the same GenerationJob
(the spec the API sends, defaults filled in, and its label) created with
kubernetes_asyncio (aiohttp as well). No operator runs; every job stays Pending.

| {CLIENTS} clients | API `POST /v1/jobs` | direct create | ratio API / direct |
|---|---|---|---|
| p50 | {api["p50"]:.0f} ms | {direct["p50"]:.0f} ms | **{api["p50"] / direct["p50"]:.2f}** |
| p99 | {api["p99"]:.0f} ms | {direct["p99"]:.0f} ms | **{api["p99"] / direct["p99"]:.2f}** |
| requests/s sustained | **{api["rate"]:.0f}** | {direct["rate"]:.0f} | {rate_ratio:.2f} |

With one client ({SERIAL} requests each, no queueing): p50 {one_api["p50"]:.1f} ms
through the API, {one_direct["p50"]:.1f} ms direct.

Per phase (*in server*: the mean of the API's own `diffleet_api_request_seconds` for
the phase's 201s, the rest of the client's latency is queueing before the API reads the
request; *CPU per request*, ms: user + system time over the phase divided by its
requests, of the API processes, this script's clients, and every PostgreSQL,
kube-apiserver and etcd process, whoever else used them meanwhile included; *kube
requests*: kube-apiserver's requests of the phase, from its apiserver_request_total, per
create):

{TABLE_HEAD}
{rows}

kube-apiserver's requests besides the creates, per create: through the API
{other_requests(phases, "API")}; direct {other_requests(phases, "direct")}.

The background, with no request in flight ({IDLE_SECONDS:.0f} s before the warm-up), in
ms of CPU per second: {idle}. Each phase's CPU per request holds it, spread over the
phase's requests: more per request in slower phases.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000, help="creates per door and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (the order alternates)")
    parser.add_argument("--processes", type=int, default=1, help="diffleet-api processes")
    args = parser.parse_args()
    if "KUBECONFIG" not in os.environ:
        raise SystemExit('KUBECONFIG is unset: needs the local stack, eval "$(make -s env)"')
    run(args.jobs, args.rounds, args.processes)


if __name__ == "__main__":
    main()
