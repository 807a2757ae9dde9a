"""The chaos stream: jobs submitted in waves (with kubectl, and through the REST API with
webhooks to a loopback receiver) onto simulated workers, while components of the stack
and of the platform are SIGKILLed and restarted one step at a time; then what a user
would check: every job terminal, none lost, outputs, credits and webhooks."""

import contextlib
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from statistics import mean
from typing import Any

import boto3
import httpx

from diffleet_core.resources.generation_job import Tier
from tests.api.support import Api, ApiTenant, WebhookReceiver, connect, create_tenant, spawn_api
from tests.support import faults
from tests.support.platform import Platform, Process, register_model
from tests.support.polling import DeadlineExceededError, eventually
from tests.support.stack import Kubectl

TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
# The platform's own processes the stream kills; every other name is a stack component.
PLATFORM = frozenset({"operator", "api", "worker"})
WORKERS = 6
REST_SHARE = 4  # one job in REST_SHARE goes through the REST API
REST_BATCH = 50  # the most jobs one POST /v1/jobs:batch takes
SIZE_VARIABLE = "DIFFLEET_CHAOS_SIZE"


@dataclass(frozen=True)
class Plan:
    """How many jobs, which kill steps (components killed together), and the time budget."""

    jobs: int
    steps: tuple[tuple[str, ...], ...]
    budget_seconds: float


BOUNDED = Plan(200, (("rabbitmq",), ("kube-apiserver",), ("operator",)), 240)
FULL = Plan(
    1000,
    (
        ("rabbitmq",),
        ("kube-apiserver",),
        ("etcd",),
        ("postgres",),
        ("minio",),
        ("operator",),
        ("api",),
        ("worker",),
        ("rabbitmq", "operator"),
        ("kube-apiserver", "etcd"),
        ("postgres", "api"),
    ),
    1800,
)


def chosen_plan() -> tuple[str, Plan]:
    """`full` (make chaos) or `bounded` (make test), from DIFFLEET_CHAOS_SIZE."""
    size = os.environ.get(SIZE_VARIABLE, "bounded")
    return size, {"bounded": BOUNDED, "full": FULL}[size]


@dataclass(frozen=True)
class JobSpec:
    name: str
    batch_size: int
    rest: bool


def job_specs(total: int) -> list[JobSpec]:
    pick = random.Random(12)  # noqa: S311 - a reproducible mix, not a secret
    return [
        JobSpec(f"chaos-{i:04d}", pick.randint(1, 2), rest=i % REST_SHARE == 0)
        for i in range(total)
    ]


@dataclass
class Figures:
    """What one run measured (issue 12 §3)."""

    jobs: int = 0
    rest_jobs: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    recovery_seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    restart_seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lost: dict[str, str] = field(default_factory=dict)
    """Jobs left non-terminal (or never created), with their phase and last condition."""
    failed: dict[str, str] = field(default_factory=dict)
    duplicate_outputs: int = 0
    missing_outputs: int = 0
    ledger_imbalance: Decimal = Decimal(0)
    unsettled: list[str] = field(default_factory=list)
    webhook_deliveries: dict[str, int] = field(default_factory=dict)
    webhook_ids_unstable: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0

    def table(self) -> str:
        deliveries = list(self.webhook_deliveries.values()) or [0]
        rows = [
            ("jobs", f"{self.jobs} ({self.rest_jobs} through the REST API)"),
            ("elapsed", f"{self.elapsed_seconds:.0f} s"),
            ("kills", ", ".join(f"{name} {n}" for name, n in self.kills.items())),
            ("lost", str(len(self.lost))),
            ("failed", str(len(self.failed))),
            ("duplicate outputs", str(self.duplicate_outputs)),
            ("missing outputs", str(self.missing_outputs)),
            ("ledger imbalance", str(self.ledger_imbalance)),
            ("REST jobs not settled or refunded exactly once", str(len(self.unsettled))),
            (
                "webhook deliveries per job",
                f"mean {mean(deliveries):.2f}, max {max(deliveries)}, "
                f"jobs without one {sum(1 for n in deliveries if n == 0)}",
            ),
        ]
        for name, seconds in self.recovery_seconds.items():
            restart = self.restart_seconds[name]
            rows.append(
                (
                    f"recovery: {name}",
                    f"restart {mean(restart):.1f} s, then next job done "
                    f"{mean(seconds):.1f} s (max {max(seconds):.1f} s)",
                )
            )
        lines = ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        lines += [f"- lost {name}: {why}" for name, why in sorted(self.lost.items())[:20]]
        reasons = Counter(self.failed.values())
        lines += [f"- failed with {reason}: {count}" for reason, count in reasons.items()]
        return "\n".join(lines)


@dataclass
class Stream:
    """One chaos run in a test namespace; `run` submits, kills, revives and waits."""

    kubectl: Kubectl
    platform: Platform
    plan: Plan
    figures: Figures = field(default_factory=Figures)
    operators: list[Process] = field(default_factory=list)
    workers: dict[str, Process] = field(default_factory=dict)
    api: Api | None = None
    tenant: ApiTenant | None = None
    receiver: WebhookReceiver = field(default_factory=WebhookReceiver)
    specs: list[JobSpec] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)
    """Batch size of each submitted job, by name (the API names the REST ones)."""
    rest_uids: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.platform.namespace

    def start(self) -> None:
        self.operators = [self.platform.operator("op-0"), self.platform.operator("op-1")]
        register_model(self.kubectl, self.namespace, "m")
        for index in range(WORKERS):
            self.start_worker(f"w{index}")
        self.start_api()
        self.tenant = create_tenant(self.namespace, Tier.ENTERPRISE, credits="1000000")
        self.specs = job_specs(self.plan.jobs)
        self.figures.jobs = len(self.specs)
        self.figures.rest_jobs = sum(1 for spec in self.specs if spec.rest)

    def start_worker(self, worker_id: str) -> None:
        self.workers[worker_id] = self.platform.worker(
            worker_id, concurrency="2", sim_step_seconds="0.05", sim_load_seconds="0"
        )

    def start_api(self) -> None:
        [self.api] = spawn_api(self.namespace)

    def stop(self) -> None:
        """Deletes the jobs while the operators still run to drop their finalizers (one
        kubectl patch per job in the namespace's teardown would take minutes), then stops
        the API and the webhook receiver."""
        self.kubectl.run(
            "delete", "generationjobs", "--all", "-n", self.namespace, "--wait=false",
            check=False, timeout=120,
        )  # fmt: skip
        with contextlib.suppress(DeadlineExceededError):
            eventually(lambda: not self.phases(), timeout=120, interval=1, what="the jobs deleted")
        if self.api is not None:
            self.api.process.stop()
        self.receiver.close()

    # ------------------------------------------------------------ submitting

    def submit(self, wave: list[JobSpec]) -> None:
        by_kubectl = [spec for spec in wave if not spec.rest]
        self.expected |= {spec.name: spec.batch_size for spec in by_kubectl}
        if by_kubectl:
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests(by_kubectl)})

            def applied() -> bool:
                self.kubectl.apply(body, self.namespace)
                return True

            eventually(applied, timeout=120, interval=1, what="jobs applied")
        rest = [spec for spec in wave if spec.rest]
        for start in range(0, len(rest), REST_BATCH):
            self.submit_rest(rest[start : start + REST_BATCH])

    def submit_rest(self, batch: list[JobSpec]) -> None:
        """One batch, retried under one Idempotency-Key until the API takes it."""
        assert self.tenant is not None
        member = self.tenant.member
        key = uuid.uuid4().hex
        body = {
            "jobs": [
                {
                    "model": "m",
                    "prompt": "a green triangle",
                    "steps": 2,
                    "batchSize": spec.batch_size,
                    "webhookUrl": self.receiver.url,
                }
                for spec in batch
            ]
        }

        def post() -> httpx.Response | None:
            assert self.api is not None  # the current one: a killed API is replaced
            with self.api.client(member, timeout=30) as http:
                response = http.post("/v1/jobs:batch", json=body, headers={"Idempotency-Key": key})
            return None if response.status_code >= 500 or response.status_code == 429 else response

        response = eventually(post, timeout=120, interval=1, what="REST batch answered")
        assert response.status_code == 201, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        for spec, item in zip(batch, items, strict=True):
            self.rest_uids[item["id"]] = item["uid"]
            self.expected[item["id"]] = spec.batch_size

    # ------------------------------------------------------------ progress

    def phases(self) -> dict[str, str]:
        listed = self.kubectl.run(
            "get", "generationjobs", "-n", self.namespace, "-o",
            'jsonpath={range .items[*]}{.metadata.name}{" "}{.status.phase}{"\\n"}{end}',
        ).stdout  # fmt: skip
        pairs = (line.split(" ", 1) for line in listed.splitlines() if line.strip())
        return {name: phase for name, phase in pairs}

    def terminal_count(self) -> int:
        return sum(1 for phase in self.phases().values() if phase in TERMINAL)

    def wait_for_terminal(self, count: int, timeout: float) -> None:
        eventually(
            lambda: self.terminal_count() >= count,
            timeout=timeout,
            interval=1,
            what=f"{count} jobs terminal",
        )

    # ------------------------------------------------------------ faults

    def leader(self) -> Process:
        lease = self.kubectl.json("get", "lease", "diffleet-operator", "-n", self.namespace)
        holder = lease["spec"]["holderIdentity"]
        return next(op for op in self.operators if op.name == holder)

    def kill(self, name: str) -> None:
        self.figures.kills[name] += 1
        if name == "operator":
            leader = eventually(self.leader, timeout=60, what="the operator leader")
            leader.kill()
            self.operators.remove(leader)
        elif name == "api":
            assert self.api is not None
            self.api.process.kill()
        elif name == "worker":
            self.workers["w0"].kill()
        else:
            faults.kill(name)

    def restart(self, name: str) -> None:
        """Restarts one killed platform process (the stack's are revived together)."""
        if name == "operator":
            self.operators.append(self.platform.operator(f"op-{uuid.uuid4().hex[:4]}"))
        elif name == "api":
            self.start_api()
        elif name == "worker":
            self.start_worker("w0")

    def step(self, names: tuple[str, ...], then: list[JobSpec], timeout: float) -> None:
        """Kills `names` together and restarts them, submits the wave `then` (so that work
        is waiting), and times the recovery: from the restart until the next job ends."""
        for name in names:
            self.kill(name)
        started = time.monotonic()
        if any(name not in PLATFORM for name in names):
            faults.revive()
        for name in names:
            self.restart(name)
        restarted = time.monotonic()
        before = eventually(self.terminal_count, timeout=timeout, what="jobs listed")
        self.submit(then)
        self.wait_for_terminal(before + 1, timeout)
        label = "+".join(names)
        self.figures.restart_seconds[label].append(restarted - started)
        self.figures.recovery_seconds[label].append(time.monotonic() - restarted)

    def run(self) -> None:
        """Waves of jobs; each kill step lands while half of a wave is still to run, and
        the next wave follows the restart."""
        started = time.monotonic()
        size = -(-len(self.specs) // (len(self.plan.steps) + 1))
        waves = [self.specs[start : start + size] for start in range(0, len(self.specs), size)]
        self.submit(waves[0])
        for index, names in enumerate(self.plan.steps):
            self.wait_for_terminal(len(self.expected) - size // 2, self.left(started))
            self.step(names, waves[index + 1], min(180, self.left(started)))
        with contextlib.suppress(DeadlineExceededError):  # check() names the jobs left
            self.wait_for_terminal(len(self.expected), self.left(started))
        self.figures.elapsed_seconds = time.monotonic() - started

    def left(self, started: float) -> float:
        return max(1.0, self.plan.budget_seconds - (time.monotonic() - started))

    # ------------------------------------------------------------ checks

    def check(self) -> Figures:
        jobs = {
            job["metadata"]["name"]: job
            for job in self.kubectl.json("get", "generationjobs", "-n", self.namespace)["items"]
        }
        for name in self.expected:
            status = jobs.get(name, {}).get("status") or {}
            phase = status.get("phase")
            if phase not in TERMINAL:
                last = (status.get("conditions") or [{}])[-1]
                self.figures.lost[name] = f"{phase}: {last.get('type')} {last.get('message')}"
            elif phase != "Succeeded":
                self.figures.failed[name] = jobs[name]["status"].get("reason", phase)
        self.check_outputs(jobs)
        self.check_ledger(jobs)
        self.check_webhooks()
        return self.figures

    def check_outputs(self, jobs: dict[str, dict[str, Any]]) -> None:
        stored = Counter(
            (key.split("/")[1], key.split("/")[2]) for key in output_keys(f"{self.namespace}/")
        )
        for name, batch_size in self.expected.items():
            job = jobs.get(name)
            if job is None or (job.get("status") or {}).get("phase") != "Succeeded":
                continue
            count = stored[(name, job["metadata"]["uid"])]
            self.figures.duplicate_outputs += max(0, count - batch_size)
            self.figures.missing_outputs += max(0, batch_size - count)

    def check_ledger(self, jobs: dict[str, dict[str, Any]]) -> None:
        """Every REST job reserved once and settled (Succeeded) or refunded exactly once;
        the tenant's balance is the sum of its ledger."""
        assert self.tenant is not None
        tenant_id = self.tenant.id

        def entries() -> dict[str, Counter[str]] | None:
            with connect() as connection:
                rows = connection.execute(
                    "select job_uid, kind from ledger where tenant_id = %s and job_uid is not null",
                    (tenant_id,),
                ).fetchall()
            kinds: dict[str, Counter[str]] = defaultdict(Counter)
            for uid, kind in rows:
                kinds[str(uid)][kind] += 1
            done = all(
                kinds[uid]["settle"] + kinds[uid]["refund"] >= 1
                for name, uid in self.rest_uids.items()
                if name not in self.figures.lost
            )
            return kinds if done else None

        kinds = eventually(entries, timeout=60, interval=1, what="REST jobs settled or refunded")
        for name, uid in self.rest_uids.items():
            if name in self.figures.lost:
                continue  # still reserved, as a job that has not ended is
            phase = (jobs[name].get("status") or {}).get("phase")
            expected = "settle" if phase == "Succeeded" else "refund"
            if kinds[uid] != Counter({"reserve": 1, expected: 1}):
                self.figures.unsettled.append(name)
        with connect() as connection:
            row = connection.execute(
                "select t.balance - coalesce(sum(l.amount), 0) from tenants t"
                " left join ledger l on l.tenant_id = t.id where t.id = %s group by t.balance",
                (tenant_id,),
            ).fetchone()
        assert row is not None
        self.figures.ledger_imbalance = row[0]

    def check_webhooks(self) -> None:
        """Every REST job's webhook arrived at least once, every time under one delivery id."""

        def by_job() -> dict[str, list[str]] | None:
            ids: dict[str, list[str]] = defaultdict(list)
            for hook in list(self.receiver.received):
                uid = json.loads(hook.body)["job"]["uid"]
                ids[uid].append(hook.headers["Diffleet-Delivery"])
            ended = (uid for name, uid in self.rest_uids.items() if name not in self.figures.lost)
            return ids if all(uid in ids for uid in ended) else None

        try:
            ids = eventually(by_job, timeout=60, interval=1, what="every webhook delivered")
        except AssertionError:
            ids = by_job() or {}
        for name, uid in self.rest_uids.items():
            self.figures.webhook_deliveries[name] = len(ids.get(uid, []))
            if len(set(ids.get(uid, []))) > 1:
                self.figures.webhook_ids_unstable.append(name)


def manifests(specs: list[JobSpec]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GenerationJob",
            "metadata": {"name": spec.name},
            "spec": {
                "model": "m",
                "prompt": "a blue square",
                "steps": 2,
                "batchSize": spec.batch_size,
            },
        }
        for spec in specs
    ]


def output_keys(prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in pages.paginate(Bucket="diffleet-outputs", Prefix=prefix)
        for item in page.get("Contents", [])
    ]


def guarded(run: Callable[[], None]) -> None:
    """Runs `run`; whatever happens, the stack is revived afterwards (the kills must never
    leave the shared stack down)."""
    try:
        run()
    finally:
        faults.revive()
