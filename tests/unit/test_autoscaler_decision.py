"""The autoscaler's decision is a pure function of (pools, waiting jobs, fleet, estimates):
tested table-driven. Each case states the pools, what waits and what runs, and the desired
replicas (and whether the pool is at its maximum) that must come out. The estimates come
from what the operator observes (Timings), tested last."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from diffleet_core.fleet import WorkerInventory
from diffleet_core.resources.generation_job import Tier
from diffleet_operator.autoscaler.decision import Plan, decide
from diffleet_operator.autoscaler.demand import Estimates, WaitingJob
from diffleet_operator.autoscaler.timings import Timings
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.config import OperatorSettings
from diffleet_operator.moving_average import SMOOTHING
from diffleet_operator.scheduler.eligibility import Requirements
from tests.unit.test_placement import Catalog
from tests.unit.test_placement import gpu_pool as pool

MODEL = "sha256:model"
OTHER = "sha256:other"
# A new worker is ready for a model 6 s after it is decided; a run takes 2 s: one hot slot
# drains 3 queued jobs in that time.
ESTIMATES = Estimates(worker_start_seconds=4, default_run_seconds=2, default_load_seconds=2)


def pools(*names: str) -> Catalog:
    """Pools named like their GPU type (a100 and h100 have 80 GiB, t4 16 GiB)."""
    vram = {"h100": 80.0, "a100": 80.0, "t4": 16.0}
    return Catalog({name: pool(name, vram.get(name, 40)) for name in names})


def jobs(
    count: int,
    *,
    model: str = MODEL,
    vram: float = 8,
    tier: Tier = Tier.FREE,
    gpu_class: str = "any",
    model_pools: Iterable[str] | None = None,
    prefix: str = "job",
) -> list[WaitingJob]:
    needs = Requirements(
        model_digest=model,
        vram_gib=vram,
        tier=tier,
        gpu_class=gpu_class,
        model_pools=None if model_pools is None else frozenset(model_pools),
    )
    return [WaitingJob(f"{prefix}-{index}", needs) for index in range(count)]


def worker(
    worker_id: str,
    pool: str,
    *,
    gpu_type: str = "",
    vram: float = 80,
    concurrency: int = 1,
    hot: Iterable[str] = (),
    running: int = 0,
    draining: bool = False,
) -> WorkerView:
    inventory = WorkerInventory(
        worker_id=worker_id,
        pool=pool,
        gpu_type=gpu_type,
        vram_gib=vram,
        concurrency=concurrency,
        hot_models=list(hot),
        jobs_in_flight=[f"{worker_id}-running-{index}" for index in range(running)],
        draining=draining,
    )
    return WorkerView.of(inventory)


@dataclass(frozen=True)
class Case:
    pools: Catalog
    waiting: list[WaitingJob] = field(default_factory=list)
    fleet: list[WorkerView] = field(default_factory=list)
    estimates: Estimates = ESTIMATES

    def plan(self) -> Plan:
        return decide(self.pools, self.waiting, self.fleet, self.estimates)

    def desired(self) -> dict[str, int]:
        return {name: d.desired_replicas for name, d in self.plan().pools.items()}


DESIRED = [
    pytest.param(Case(pools("a100"), jobs(20)), {"a100": 4}, id="burst: one step to max"),
    pytest.param(Case(pools("a100"), jobs(3)), {"a100": 3}, id="one worker per job"),
    pytest.param(Case(pools("a100")), {"a100": 0}, id="nothing waits: zero"),
    pytest.param(
        Case(Catalog({"a100": pool("a100", minReplicas=2)})), {"a100": 2}, id="minReplicas kept"
    ),
    pytest.param(
        Case(
            Catalog({"a100": pool("a100", targetJobsPerWorker=2)}),
            jobs(5),
            [worker("w", "a100", running=1)],
        ),
        {"a100": 3},
        id="targetJobsPerWorker: (5 queued + 1 running) / 2",
    ),
    pytest.param(
        Case(pools("a100", "t4"), jobs(2)), {"a100": 0, "t4": 2}, id="activation: smallest VRAM"
    ),
    pytest.param(
        Case(pools("a100", "t4"), jobs(2, vram=24)),
        {"a100": 2, "t4": 0},
        id="activation: only pools whose VRAM fits",
    ),
    pytest.param(
        Case(pools("h100", "a100"), jobs(1)), {"a100": 1, "h100": 0}, id="activation: then name"
    ),
    pytest.param(
        Case(pools("h100", "a100", "t4"), jobs(2, gpu_class="h100")),
        {"h100": 2, "a100": 0, "t4": 0},
        id="gpuClass names the type",
    ),
    pytest.param(
        Case(
            Catalog({"big": pool("h100"), "small": pool("t4", vram=16)}),
            jobs(1, gpu_class="h100"),
        ),
        {"big": 1, "small": 0},
        id="gpuClass matches spec.gpuType, not the pool's name",
    ),
    pytest.param(
        Case(pools("a100", "t4"), jobs(2, model_pools=["a100"])),
        {"a100": 2, "t4": 0},
        id="the model's spec.pools",
    ),
    pytest.param(
        Case(Catalog({"t4": pool("t4", vram=16, tiers=["pro"])}), jobs(3, tier=Tier.FREE)),
        {"t4": 0},
        id="a tier the pool excludes never scales it",
    ),
    pytest.param(
        Case(
            Catalog({"t4": pool("t4", vram=16, tiers=["pro"]), "a100": pool("a100")}),
            jobs(2, tier=Tier.FREE) + jobs(1, tier=Tier.PRO, prefix="pro"),
        ),
        {"t4": 1, "a100": 2},
        id="tiers split the jobs",
    ),
    pytest.param(
        Case(pools("a100", "t4"), jobs(2), [worker("w", "a100", hot=[MODEL], running=1)]),
        {"a100": 1, "t4": 0},
        id="a live hot worker's pool before activating a smaller one (drained by it)",
    ),
    pytest.param(
        Case(pools("a100", "t4"), jobs(2), [worker("w", "a100", running=1)]),
        {"a100": 3, "t4": 0},
        id="a live worker's pool before activating a smaller one",
    ),
    pytest.param(
        Case(
            Catalog({"t4": pool("t4", vram=16, maximum=1), "a100": pool("a100", maximum=2)}),
            jobs(3),
            [worker("w", "t4", vram=16, running=1)],
        ),
        {"t4": 1, "a100": 2},
        id="a full pool at max spills to the next",
    ),
    pytest.param(
        Case(pools("a100"), jobs(1), [worker("hand", "bench")]),
        {"a100": 0},
        id="a worker without a GPUPool takes the job: nothing activates",
    ),
    pytest.param(
        Case(pools("a100"), jobs(3), [worker("hand", "bench")]),
        {"a100": 2},
        id="what a worker without a GPUPool has no slot for activates a pool",
    ),
    pytest.param(
        Case(pools("a100"), jobs(2), [worker("hand", "bench", draining=True)]),
        {"a100": 2},
        id="a draining worker takes nothing",
    ),
    pytest.param(
        Case(pools("t4"), jobs(2, gpu_class="h100"), [worker("w", "bench", gpu_type="h100")]),
        {"t4": 0},
        id="the type a worker announces",
    ),
    pytest.param(
        Case(
            Catalog({"old": pool("a100", minReplicas=2), "new": pool("a100")}, frozenset({"old"})),
            jobs(2),
            [worker("w", "old", running=1)],
        ),
        {"old": 1, "new": 2},
        id="a pool being deleted: no new jobs, no minimum",
    ),
    # Model-aware: one hot slot drains 3 jobs before a new worker could run the model.
    pytest.param(
        Case(pools("a100"), jobs(3), [worker("w", "a100", hot=[MODEL], running=1)]),
        {"a100": 1},
        id="short queue drained by the hot worker: no scale",
    ),
    pytest.param(
        Case(pools("a100"), jobs(5), [worker("w", "a100", hot=[MODEL], running=1)]),
        {"a100": 3},
        id="longer queue: the excess counts",
    ),
    pytest.param(
        Case(pools("a100"), jobs(3, model=OTHER), [worker("w", "a100", hot=[MODEL], running=1)]),
        {"a100": 4},
        id="hot for another model: every job counts",
    ),
    pytest.param(
        Case(
            pools("a100"),
            jobs(6),
            [worker("w", "a100", hot=[MODEL], running=1, concurrency=2)],
        ),
        {"a100": 1},
        id="each slot of a hot worker drains",
    ),
    pytest.param(
        Case(
            pools("a100"),
            jobs(3),
            [worker("w", "a100", hot=[MODEL], running=1)],
            Estimates(worker_start_seconds=1, default_run_seconds=2, default_load_seconds=1),
        ),
        {"a100": 3},
        id="a fast cold start: the queue is worth a new worker",
    ),
]


@pytest.mark.parametrize(("case", "desired"), DESIRED)
def test_desired_replicas(case: Case, desired: dict[str, int]) -> None:
    assert case.desired() == desired


def test_a_burst_past_max_is_at_max_and_its_jobs_wait_for_the_pool() -> None:
    plan = Case(pools("a100"), jobs(20)).plan()
    decision = plan.pools["a100"]
    assert (decision.desired_replicas, decision.queued_jobs, decision.at_max) == (4, 20, True)
    assert set(plan.waiting_for.values()) == {"a100"}
    assert len(plan.waiting_for) == 20


def test_within_max_is_not_at_max() -> None:
    decision = Case(pools("a100"), jobs(4)).plan().pools["a100"]
    assert (decision.desired_replicas, decision.at_max) == (4, False)


def test_a_queue_its_hot_workers_drain_is_at_max_only_where_the_pool_is() -> None:
    fleet = [worker("w", "a100", hot=[MODEL], running=1)]
    small = Catalog({"a100": pool("a100", maximum=1)})
    full = Case(small, jobs(2), fleet).plan().pools["a100"]
    assert (full.desired_replicas, full.at_max) == (1, True)
    roomy = Case(pools("a100"), jobs(2), fleet).plan().pools["a100"]
    assert (roomy.desired_replicas, roomy.at_max) == (1, False)


def test_running_jobs_are_counted_per_pool() -> None:
    fleet = [worker("a", "a100", running=1), worker("b", "a100", concurrency=2, running=2)]
    decision = Case(pools("a100"), [], fleet).plan().pools["a100"]
    assert (decision.running_jobs, decision.desired_replicas, decision.queued_jobs) == (3, 3, 0)


def test_jobs_no_pool_fits_wait_for_none() -> None:
    plan = Case(pools("t4"), jobs(2, gpu_class="h100")).plan()
    assert plan.waiting_for == {}
    assert plan.pools["t4"].queued_jobs == 0


def test_observed_timings_override_the_defaults() -> None:
    estimates = Estimates(
        worker_start_seconds=4,
        default_run_seconds=2,
        default_load_seconds=2,
        run_seconds={MODEL: 0.5},
        load_seconds={MODEL: 0},
    )
    assert (estimates.run(MODEL), estimates.cold_start(MODEL)) == (0.5, 4)
    assert (estimates.run(OTHER), estimates.cold_start(OTHER)) == (2, 6)


def test_timings_learn_run_load_and_start_times_from_what_they_observe() -> None:
    settings = OperatorSettings(
        autoscaler_run_seconds=10,
        autoscaler_model_load_seconds=20,
        autoscaler_worker_start_seconds=30,
    )
    timings = Timings(settings)
    assert timings.estimates().cold_start(MODEL) == 50
    start = datetime(2026, 1, 1, tzinfo=UTC)
    timings.started("hot-run", start, frozenset({MODEL}))
    timings.succeeded("hot-run", start + timedelta(seconds=4), MODEL)
    timings.started("cold-run", start, frozenset())
    timings.succeeded("cold-run", start + timedelta(seconds=9), MODEL)
    # The pool wants a second worker at t=100; it announces itself at t=112.
    timings.pool_seen("a100", desired=2, live=1, now=100)
    timings.pool_seen("a100", desired=2, live=2, now=112)
    estimates = timings.estimates()
    assert estimates.run(MODEL) == 4
    assert estimates.cold_start(MODEL) == 12 + 5
    assert estimates.run(OTHER) == 10


def test_timings_smooth_samples_and_forget_runs_that_failed() -> None:
    timings = Timings(OperatorSettings())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for uid, seconds in (("a", 4), ("b", 14)):
        timings.started(uid, start, frozenset({MODEL}))
        timings.succeeded(uid, start + timedelta(seconds=seconds), MODEL)
    timings.started("failed", start, frozenset({MODEL}))
    timings.ended("failed")
    timings.succeeded("failed", start + timedelta(seconds=100), MODEL)
    assert timings.estimates().run(MODEL) == pytest.approx(4 + SMOOTHING * 10)
