"""Placement is a pure function of (requirements, fleet snapshot, GPUPools): tested
table-driven.

Each case builds a small fleet with `worker(...)` and states which worker (or which
refusal) placement must choose, and why. Pool identity (tiers, GPU types, pools being
deleted) has its own table.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from diffleet_core.fleet import WorkerInventory
from diffleet_core.messages import ModelRef
from diffleet_core.resources.generation_job import Tier
from diffleet_core.resources.gpu_pool import GPUPoolSpec
from diffleet_core.resources.model_cache import ModelCacheSpec
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.queue.admission import ResolvedModel
from diffleet_operator.scheduler.eligibility import Requirements, requirements, worker_fits
from diffleet_operator.scheduler.placement import Decision, Outcome, place

MODEL = "sha256:model"
OTHER = "sha256:other"


@dataclass
class Catalog:
    """GPUPools as the operator's index holds them (diffleet_operator.cache.pools)."""

    pools: dict[str, GPUPoolSpec] = field(default_factory=dict)
    being_deleted: frozenset[str] = frozenset()

    def get(self, name: str) -> GPUPoolSpec | None:
        return self.pools.get(name)

    def specs(self) -> Mapping[str, GPUPoolSpec]:
        return self.pools

    def deleting(self, name: str) -> bool:
        return name in self.being_deleted


# No GPUPool at all: workers started by hand, open to every tier.
NO_POOLS = Catalog()


def gpu_pool(gpu_type: str, vram: float = 80, maximum: int = 4, **spec: Any) -> GPUPoolSpec:
    return GPUPoolSpec.model_validate(
        {"gpuType": gpu_type, "vramGiB": vram, "maxReplicas": maximum} | spec
    )


def worker(
    worker_id: str,
    pool: str = "t4",
    vram: float = 16,
    concurrency: int = 1,
    hot: Iterable[str] = (),
    warm: Iterable[str] = (),
    jobs: Iterable[str] = (),
    assumed: Iterable[str] = (),
    draining: bool = False,
    gpu_type: str = "",
) -> WorkerView:
    inventory = WorkerInventory(
        worker_id=worker_id,
        pool=pool,
        gpu_type=gpu_type,
        vram_gib=vram,
        concurrency=concurrency,
        hot_models=list(hot),
        warm_models=list(warm),
        jobs_in_flight=list(jobs),
        draining=draining,
    )
    return WorkerView.of(inventory, assumed=frozenset(assumed))


def needs(
    model: str = MODEL,
    vram: float = 8,
    pools: Iterable[str] | None = None,
    tier: Tier | None = Tier.FREE,
    gpu_class: str = "any",
) -> Requirements:
    """A job's requirements; `pools`: its model's spec.pools."""
    return Requirements(
        model_digest=model,
        vram_gib=vram,
        tier=tier,
        gpu_class=gpu_class,
        model_pools=None if pools is None else frozenset(pools),
    )


def chosen(decision: Decision) -> str | None:
    return None if decision.worker is None else decision.worker.worker_id


CASES = [
    pytest.param(needs(), [], Outcome.NO_ELIGIBLE_WORKER, None, id="empty fleet"),
    # Pools: only the pools its model allows count.
    pytest.param(
        needs(pools={"h100"}),
        [worker("a", pool="t4"), worker("b", pool="a100")],
        Outcome.NO_ELIGIBLE_WORKER,
        None,
        id="no worker in a pool the model allows",
    ),
    pytest.param(
        needs(pools={"a100"}),
        [worker("a", pool="t4", hot=[MODEL]), worker("b", pool="a100")],
        Outcome.COLD,
        "b",
        id="hot worker outside the model's pools is ignored",
    ),
    # VRAM: the worker must have at least what the job needs.
    pytest.param(
        needs(vram=24),
        [worker("a", vram=16)],
        Outcome.NO_ELIGIBLE_WORKER,
        None,
        id="too little VRAM",
    ),
    pytest.param(
        needs(vram=24),
        [worker("a", vram=16, hot=[MODEL]), worker("b", vram=24)],
        Outcome.COLD,
        "b",
        id="exactly enough VRAM is enough; the small hot worker is skipped",
    ),
    # Draining workers take no new work.
    pytest.param(
        needs(),
        [worker("a", draining=True)],
        Outcome.NO_ELIGIBLE_WORKER,
        None,
        id="only a draining worker",
    ),
    pytest.param(
        needs(),
        [worker("a", draining=True, hot=[MODEL]), worker("b")],
        Outcome.COLD,
        "b",
        id="draining hot worker skipped",
    ),
    # Full workers: eligible but no free slot.
    pytest.param(
        needs(),
        [worker("a", jobs=["j1"]), worker("b", concurrency=2, jobs=["j2", "j3"])],
        Outcome.NO_CAPACITY,
        None,
        id="all eligible workers full",
    ),
    pytest.param(
        needs(),
        [worker("a", assumed=["j1"])],
        Outcome.NO_CAPACITY,
        None,
        id="an assumed job takes the slot",
    ),
    pytest.param(
        needs(),
        [worker("a", concurrency=2, jobs=["j1"], assumed=["j1"])],
        Outcome.COLD,
        "a",
        id="a job both reported and assumed counts once",
    ),
    pytest.param(
        needs(pools={"h100"}),
        [worker("a", pool="t4"), worker("b", pool="h100", jobs=["j1"])],
        Outcome.NO_CAPACITY,
        None,
        id="capacity only outside the model's pools",
    ),
    # Locality: hot over warm over cold.
    pytest.param(
        needs(),
        [worker("a"), worker("b", warm=[MODEL]), worker("c", hot=[MODEL])],
        Outcome.HOT,
        "c",
        id="hot preferred",
    ),
    pytest.param(
        needs(),
        [worker("a"), worker("b", warm=[MODEL]), worker("c", hot=[OTHER])],
        Outcome.WARM,
        "b",
        id="warm preferred over cold",
    ),
    pytest.param(
        needs(),
        [worker("a", hot=[OTHER]), worker("b", warm=[OTHER])],
        Outcome.COLD,
        "a",
        id="other models do not count",
    ),
    pytest.param(
        needs(),
        [worker("a"), worker("b", concurrency=4, jobs=["j1", "j2", "j3"], hot=[MODEL])],
        Outcome.HOT,
        "b",
        id="a busier hot worker beats an idle cold one",
    ),
    pytest.param(
        needs(),
        [worker("a", warm=[MODEL]), worker("b", hot=[MODEL], jobs=["j1"])],
        Outcome.WARM,
        "a",
        id="full hot worker falls back to warm",
    ),
    pytest.param(
        needs(),
        [worker("a", hot=[MODEL], warm=[MODEL])],
        Outcome.HOT,
        "a",
        id="hot and warm on one worker is hot",
    ),
    # Among equals: least loaded (load / concurrency), then by id.
    pytest.param(
        needs(),
        [worker("a", concurrency=2, jobs=["j1"]), worker("b", concurrency=2)],
        Outcome.COLD,
        "b",
        id="least loaded",
    ),
    pytest.param(
        needs(),
        [
            worker("a", concurrency=2, jobs=["j1"]),
            worker("b", concurrency=4, jobs=["j2"]),
        ],
        Outcome.COLD,
        "b",
        id="load is relative to concurrency",
    ),
    pytest.param(
        needs(),
        [
            worker("a", concurrency=4, jobs=["j1", "j2"], hot=[MODEL]),
            worker("b", concurrency=4, jobs=["j3"], hot=[MODEL]),
        ],
        Outcome.HOT,
        "b",
        id="least loaded among hot",
    ),
    pytest.param(
        needs(),
        [
            worker("a", concurrency=2, assumed=["j1"], warm=[MODEL]),
            worker("b", concurrency=2, warm=[MODEL]),
        ],
        Outcome.WARM,
        "b",
        id="assumed jobs count as load",
    ),
    pytest.param(
        needs(),
        [worker("c"), worker("a"), worker("b")],
        Outcome.COLD,
        "a",
        id="ties broken by id",
    ),
    pytest.param(
        needs(),
        [worker("b", hot=[MODEL]), worker("a", hot=[MODEL])],
        Outcome.HOT,
        "a",
        id="ties among hot broken by id",
    ),
]


@pytest.mark.parametrize(("requirements", "fleet", "outcome", "worker_id"), CASES)
def test_place(
    requirements: Requirements, fleet: list[WorkerView], outcome: Outcome, worker_id: str | None
) -> None:
    decision = place(requirements, fleet, NO_POOLS)
    assert decision.outcome is outcome
    assert chosen(decision) == worker_id
    assert decision.placed is (worker_id is not None)


@pytest.mark.parametrize(
    ("view", "requirements", "expected"),
    [
        pytest.param(worker("a"), needs(), True, id="fits"),
        pytest.param(worker("a", pool="t4"), needs(pools={"a100"}), False, id="wrong pool"),
        pytest.param(worker("a", vram=16), needs(vram=16.5), False, id="too little VRAM"),
        pytest.param(worker("a", draining=True), needs(), False, id="draining"),
        pytest.param(worker("a", jobs=["j1"]), needs(), True, id="full is still eligible"),
        pytest.param(worker("a", pool="t4"), needs(gpu_class="t4"), True, id="type: pool name"),
        pytest.param(worker("a", pool="t4"), needs(gpu_class="a100"), False, id="other type"),
        pytest.param(
            worker("a", pool="p", gpu_type="a100"),
            needs(gpu_class="a100"),
            True,
            id="type: as announced",
        ),
        pytest.param(
            worker("a", pool="a100", gpu_type="l4"),
            needs(gpu_class="a100"),
            False,
            id="the announced type, not the pool's name",
        ),
    ],
)
def test_eligible(view: WorkerView, requirements: Requirements, expected: bool) -> None:
    assert worker_fits(view, requirements, NO_POOLS) is expected


POOLS = Catalog(
    {
        "pro-only": gpu_pool("a100", tiers=["pro", "enterprise"]),
        "anyone": gpu_pool("a100"),
        "leaving": gpu_pool("a100"),
    },
    being_deleted=frozenset({"leaving"}),
)


@pytest.mark.parametrize(
    ("pool", "tier", "expected"),
    [
        pytest.param("pro-only", Tier.PRO, True, id="a tier the pool lists"),
        pytest.param("pro-only", Tier.FREE, False, id="a tier the pool does not list"),
        pytest.param("pro-only", None, True, id="pre-warming: any tier"),
        pytest.param("anyone", Tier.FREE, True, id="no tiers: every tier"),
        pytest.param("leaving", Tier.PRO, False, id="a pool being deleted: no new jobs"),
        pytest.param("by-hand", Tier.FREE, True, id="no GPUPool: every tier"),
    ],
)
def test_the_pool_decides_which_tiers_may_use_its_workers(
    pool: str, tier: Tier | None, expected: bool
) -> None:
    view = worker("w", pool=pool, vram=80)
    assert worker_fits(view, needs(tier=tier), POOLS) is expected
    decision = place(needs(tier=tier), [view], POOLS)
    assert decision.placed is expected


def test_placing_until_full_never_exceeds_concurrency() -> None:
    """Place and assume job after job: every slot is used once, then NO_CAPACITY."""
    fleet = {
        view.worker_id: view
        for view in (
            worker("a", concurrency=3, hot=[MODEL]),
            worker("b", concurrency=2, warm=[MODEL]),
            worker("c", concurrency=1, jobs=["running"]),
            worker("d", concurrency=2),
        )
    }
    placed: list[tuple[str, Outcome]] = []
    for number in range(20):
        decision = place(needs(), list(fleet.values()), NO_POOLS)
        if decision.worker is None:
            assert decision.outcome is Outcome.NO_CAPACITY
            break
        target = decision.worker
        fleet[target.worker_id] = replace(target, assumed=target.assumed | {f"job-{number}"})
        placed.append((target.worker_id, decision.outcome))
    for view in fleet.values():
        assert view.load <= view.concurrency
    assert placed == [
        ("a", Outcome.HOT),
        ("a", Outcome.HOT),
        ("a", Outcome.HOT),
        ("b", Outcome.WARM),
        ("b", Outcome.WARM),
        ("d", Outcome.COLD),
        ("d", Outcome.COLD),
    ]


@pytest.mark.parametrize(
    ("concurrency", "jobs", "assumed", "load", "free"),
    [
        (1, [], [], 0, 1),
        (2, ["j1"], [], 1, 1),
        (2, ["j1"], ["j2"], 2, 0),
        (2, ["j1"], ["j1"], 1, 1),
        (1, ["j1", "j2"], ["j3"], 3, 0),
    ],
)
def test_worker_view_load_and_free_slots(
    concurrency: int, jobs: list[str], assumed: list[str], load: int, free: int
) -> None:
    view = worker("a", concurrency=concurrency, jobs=jobs, assumed=assumed)
    assert view.load == load
    assert view.free_slots == free


def resolved(pools: list[str] | None) -> ResolvedModel:
    spec = ModelCacheSpec.model_validate(
        {
            "source": "s3://models/m.safetensors",
            "format": "safetensors",
            "baseModel": "sd15",
            "vramGiB": 6.0,
            "pools": pools,
        }
    )
    ref = ModelRef(
        namespace="ns",
        name="m",
        source=spec.source,
        format=spec.format,
        type=spec.type,
        base_model=spec.base_model,
        digest=MODEL,
    )
    return ResolvedModel(ref, spec)


def test_requirements_of_a_job_and_of_pre_warming() -> None:
    assert requirements(resolved(["a100", "t4"]), Tier.PRO, "t4") == Requirements(
        model_digest=MODEL,
        vram_gib=6.0,
        tier=Tier.PRO,
        gpu_class="t4",
        model_pools=frozenset({"a100", "t4"}),
    )
    assert requirements(resolved(None)) == Requirements(model_digest=MODEL, vram_gib=6.0)
