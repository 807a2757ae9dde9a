"""API benchmark: what the REST front door adds to creating a GenerationJob, against the
local stack (kube-apiserver, PostgreSQL; RabbitMQ and S3 only for the API's readiness).

1. A fresh namespace and an enterprise tenant owning it (created with diffleet-admin's
   functions), its rate limits raised past the benchmark and credits for every job; a
   ModelCache `m` (sd15) to price jobs against. No operator runs: the jobs stay Pending.
2. `diffleet-api` runs as its own process on a free 127.0.0.1 port, its job watcher off.
3. Rounds, alternating which goes first so both see the same machine load:
   - *API*: 50 clients (one httpx.AsyncClient, keep-alive) share N `POST /v1/jobs` with
     the member key;
   - *direct*: 50 clients (one kubernetes_asyncio ApiClient) share N creates of the same
     GenerationJob body the API sends to Kubernetes (its spec with defaults, its label).
   Per request: client-side latency; per phase: requests/s (N / first start to last end).
   For the API, its own `diffleet_api_request_seconds` histogram gives the mean time
   inside the server, so the rest is queueing on the client and the loopback.
4. Figures: p50/p99 of each door over all rounds, their ratios, sustained requests/s.

Writes bench/results/api.md, with the machine's load averages (other engineers' tests
share its 2 cores). Bounded: N jobs per phase and round, every wait has a deadline; the
API is stopped and the namespace deleted at the end. Not a test: it never gates CI.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

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


@dataclass
class Phase:
    """One door in one round: per-request latencies and the phase's wall time."""

    door: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: int = 0  # answers other than 201 (their latencies are left out)
    server_seconds: float | None = None  # mean inside the API (its histogram), API only
    cpu_seconds: float | None = None  # the API process's CPU time per request, API only

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def load() -> str:
    return " / ".join(f"{average:.2f}" for average in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    count: int, request: Callable[[], Awaitable[bool]], phase: Phase, clients: int
) -> Phase:
    """`clients` concurrent loops share `count` requests; each successful one is timed."""
    left = count

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            if await request():
                phase.latencies.append(time.perf_counter() - started)
            else:
                phase.failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    phase.seconds = time.perf_counter() - started
    return phase


@dataclass
class Doors:
    """The two ways in: the API's URL and key, and a Kubernetes client."""

    http: httpx.AsyncClient
    custom: client.CustomObjectsApi
    namespace: str
    spec: dict[str, object]
    api_pid: int

    async def through_api(self) -> bool:
        answer = await self.http.post("/v1/jobs", json=REQUEST)
        if answer.status_code != 201:
            print(f"POST /v1/jobs: {answer.status_code} {answer.text[:200]}")
        return answer.status_code == 201

    async def direct(self) -> bool:
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
        """Sum and count of the API's own timings of successful `POST /v1/jobs`."""
        text = (await self.http.get("/metrics")).text
        totals = {"sum": 0.0, "count": 0.0}
        for line in text.splitlines():
            labels = 'method="POST",route="/v1/jobs",status="201"'
            for kind in totals:
                if line.startswith(f"{HISTOGRAM}_{kind}{{") and labels in line:
                    totals[kind] += float(line.rpartition(" ")[2])
        return totals["sum"], totals["count"]

    async def api_phase(self, count: int, clients: int = CLIENTS) -> Phase:
        sum_before, count_before = await self.server_totals()
        cpu_before = cpu_seconds(self.api_pid)
        phase = await hammer(count, self.through_api, Phase("API", clients), clients)
        phase.cpu_seconds = (cpu_seconds(self.api_pid) - cpu_before) / count
        sum_after, count_after = await self.server_totals()
        if count_after > count_before:
            phase.server_seconds = (sum_after - sum_before) / (count_after - count_before)
        return phase

    async def direct_phase(self, count: int, clients: int = CLIENTS) -> Phase:
        return await hammer(count, self.direct, Phase("direct", clients), clients)


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


async def measure(
    url: str, api_pid: int, tenant: Tenant, jobs: int, rounds: int
) -> tuple[list[Phase], str]:
    """Warms both doors up, then runs the rounds; returns the phases and the loads."""
    await config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CLIENTS
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {tenant.key}"}
    async with (
        client.ApiClient(configuration) as kube,
        httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=TIMEOUT_SECONDS
        ) as http,
    ):
        custom = client.CustomObjectsApi(kube)
        await model_cache(custom, tenant.namespace)
        spec = wire_spec(GenerationJobSpec.model_validate(REQUEST))
        doors = Doors(http, custom, tenant.namespace, spec, api_pid)
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
    return phases, "; ".join(loads)


def run(jobs: int, rounds: int) -> None:
    namespace = f"bench-api-{uuid.uuid4().hex[:6]}"
    logs = ROOT / ".diffleet" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api: subprocess.Popen[bytes] | None = None
    try:
        tenant = make_tenant(namespace, credits=(jobs * rounds + CLIENTS + SERIAL) * 2)
        api = spawn_api(namespace, port, logs / f"{namespace}-api.log")
        started = api

        async def ready() -> bool:
            if started.poll() is not None:
                raise RuntimeError(f"diffleet-api exited; see {logs}/{namespace}-api.log")
            try:
                async with httpx.AsyncClient(timeout=5) as probe:
                    return (await probe.get(f"{url}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        asyncio.run(deadline(ready, 120, "diffleet-api ready"))
        phases, loads = asyncio.run(measure(url, api.pid, tenant, jobs, rounds))
    finally:
        if api is not None:
            stop(api)
        subprocess.run(
            ["kubectl", "delete", "namespace", namespace, "--wait=false"],
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip
    RESULTS.write_text(report(phases, jobs, loads))
    print(RESULTS.read_text())


def summary(phases: list[Phase], door: str, clients: int) -> dict[str, float]:
    mine = [phase for phase in phases if phase.door == door and phase.clients == clients]
    latencies = [latency for phase in mine for latency in phase.latencies]
    return {
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "rate": sum(len(p.latencies) for p in mine) / sum(p.seconds for p in mine),
    }


def phase_row(phase: Phase) -> str:
    server = f"{phase.server_seconds * 1000:.0f} ms" if phase.server_seconds else "-"
    cpu = f"{phase.cpu_seconds * 1000:.1f} ms" if phase.cpu_seconds else "-"
    return (
        f"| {phase.clients} | {phase.door} | {percentile(phase.latencies, 50) * 1000:.0f} ms"
        f" | {percentile(phase.latencies, 99) * 1000:.0f} ms | {phase.rate:.0f}"
        f" | {server} | {cpu} | {phase.failures} |"
    )


def report(phases: list[Phase], jobs: int, loads: str) -> str:
    api, direct = summary(phases, "API", CLIENTS), summary(phases, "direct", CLIENTS)
    one_api, one_direct = summary(phases, "API", 1), summary(phases, "direct", 1)
    rate_ratio = api["rate"] / direct["rate"]
    rows = "\n".join(phase_row(phase) for phase in phases)
    return f"""# API benchmark

Measured by `bench/api.py` on {time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores; the
local stack (kube-apiserver, etcd, PostgreSQL, RabbitMQ, MinIO), one `diffleet-api`
process (uvicorn, one event loop, watcher off) and this script's clients all on the same
machine, which other engineers' tests share: load averages (1 / 5 / 15 min) before the
measured phases and after each round: {loads}.

{CLIENTS} concurrent clients, {jobs} creates per door and round, rounds alternating
which door goes first. *API*: `POST /v1/jobs` (httpx, keep-alive) with an enterprise
tenant's member key, rate limits raised past the run. *direct*: the same GenerationJob
(the spec the API sends, defaults filled in, and its label) created with
kubernetes_asyncio. No operator runs; every job stays Pending.

| {CLIENTS} clients | API `POST /v1/jobs` | direct create | ratio API / direct |
|---|---|---|---|
| p50 | {api["p50"]:.0f} ms | {direct["p50"]:.0f} ms | **{api["p50"] / direct["p50"]:.2f}** |
| p99 | {api["p99"]:.0f} ms | {direct["p99"]:.0f} ms | **{api["p99"] / direct["p99"]:.2f}** |
| requests/s sustained | **{api["rate"]:.0f}** | {direct["rate"]:.0f} | {rate_ratio:.2f} |

With one client ({SERIAL} requests each, no queueing): p50 {one_api["p50"]:.1f} ms
through the API, {one_direct["p50"]:.1f} ms direct.

Per phase (*in server*: the mean of the API's own `diffleet_api_request_seconds` for
the phase's 201s, the rest of the client's latency is queueing before the API reads the
request; *API CPU*: the API process's user + system time over the phase, per request):

| clients | door | p50 | p99 | requests/s | in server (mean) | API CPU per request | failed |
|---|---|---|---|---|---|---|---|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000, help="creates per door and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (the order alternates)")
    args = parser.parse_args()
    if "KUBECONFIG" not in os.environ:
        raise SystemExit('KUBECONFIG is unset: needs the local stack, eval "$(make -s env)"')
    run(args.jobs, args.rounds)


if __name__ == "__main__":
    main()
