"""bench/bound.py: Belady's bound on cases computed by hand, and the zero-overhead
simulation's invariants; bench/traces.py: traces are deterministic."""

import pytest

from bench import bound
from bench.traces import Record, TraceShape, generate


@pytest.mark.parametrize(
    ("models", "slots", "loads"),
    [
        ("AAAA", 1, 1),
        ("ABAB", 1, 4),
        ("ABAB", 2, 2),
        # C evicts B (needed after A); then B evicts A or C, neither needed again.
        ("ABCABD", 2, 5),
        # Cyclic: LRU misses all six; Belady keeps A, then C.
        ("ABCABC", 2, 4),
        ("", 3, 0),
    ],
)
def test_belady_loads(models: str, slots: int, loads: int) -> None:
    assert bound.belady(list(models), slots) == loads


def trace(*jobs: tuple[float, str, float]) -> list[Record]:
    return [{"t": t, "model": m, "lora": None, "seconds": seconds} for t, m, seconds in jobs]


ONE_WORKER = bound.Fleet(workers=1, concurrency=1, hot_slots=1, load_seconds=2.0)


def test_arrival_order_on_one_worker_by_hand() -> None:
    # A loads (0-2) and runs (2-3); B waits 3 s, loads (3-5), runs (5-6); A again.
    records = trace((0, "A", 1), (0, "B", 1), (0, "A", 1))
    for policy in ("least_loaded", "hot_first"):
        assert bound.simulate(records, ONE_WORKER, policy) == {
            "checkpoint_loads": 3,
            "p50_wait_s": 3.0,
            "p99_wait_s": 6.0,
            "makespan_s": 9.0,
        }


def test_the_planner_groups_by_model_below_the_arrival_order_bound() -> None:
    # The second A runs right after the first (no load), B last: 2 loads where arrival
    # order needs 3.
    records = trace((0, "A", 1), (0, "B", 1), (0, "A", 1))
    assert bound.belady([r["model"] for r in records], 1) == 3
    assert bound.simulate(records, ONE_WORKER, "planner") == {
        "checkpoint_loads": 2,
        "p50_wait_s": 3.0,
        "p99_wait_s": 4.0,
        "makespan_s": 7.0,
    }


def test_hot_first_keeps_a_model_on_its_worker() -> None:
    fleet = bound.Fleet(workers=2, concurrency=1, hot_slots=1, load_seconds=5.0)
    # B arrives while w0 (A) is busy: both load it on w1. Later every worker is free:
    # least-loaded takes w0 (lowest id) for A (hot there) and for B (a load), hot-first
    # the worker that holds each.
    records = trace((0, "A", 1), (1, "B", 1), (20, "A", 1), (30, "B", 1))
    assert bound.simulate(records, fleet, "least_loaded")["checkpoint_loads"] == 3
    assert bound.simulate(records, fleet, "hot_first")["checkpoint_loads"] == 2


@pytest.mark.parametrize("policy", bound.POLICIES)
def test_every_job_runs_once_and_arrival_order_never_beats_belady(policy: str) -> None:
    records = generate(TraceShape(jobs=300, models=12, workers=3, concurrency=2, seed=4))
    fleet = bound.Fleet(workers=3, concurrency=2, hot_slots=2, load_seconds=4.0)
    sim = bound.Simulation(fleet, records, run_estimate=3.0)
    choose = (
        bound.planner(sim)
        if policy == "planner"
        else bound.least_loaded(sim, hot_first=policy == "hot_first")
    )
    result = sim.run(choose)
    assert len(sim.waits) == len(records)
    assert min(sim.waits) >= 0
    assert result["makespan_s"] >= max(float(r["t"]) for r in records)
    assert max(len(w.hot) for w in sim.workers) <= fleet.hot_slots
    if policy != "planner":  # jobs start in arrival order: one cache of N x K at best
        assert result["checkpoint_loads"] >= bound.belady([r["model"] for r in records], 6)


def test_reference_reports_every_policy_against_belady() -> None:
    records = generate(TraceShape(jobs=200, models=10, workers=2, seed=5))
    result = bound.reference(records, workers=2, concurrency=1, hot_slots=2, load_seconds=8)
    assert result["jobs"] == 200
    assert result["belady"]["checkpoint_loads"] > 0
    for policy in bound.POLICIES:
        assert set(result[policy]) == {"checkpoint_loads", "p50_wait_s", "p99_wait_s", "makespan_s"}


def test_percentile_is_nearest_rank() -> None:
    assert bound.percentile([], 99) == 0.0
    assert bound.percentile([float(v) for v in range(1, 101)], 99) == 99.0
    assert bound.percentile([1.0, 2.0], 50) == 1.0


def test_traces_are_deterministic_and_ordered() -> None:
    shape = TraceShape(jobs=500, burst_every=600.0, seed=7)
    records = generate(shape)
    assert records == generate(shape)
    assert records != generate(TraceShape(jobs=500, burst_every=600.0, seed=8))
    assert len(records) == 500
    assert [r["t"] for r in records] == sorted(r["t"] for r in records)
    # A sweep: burst_models distinct checkpoints, prompt after prompt.
    first_sweep = [r["model"] for r in records if 300.0 <= r["t"] < 300.0 + shape.burst_seconds]
    assert len(set(first_sweep)) >= shape.burst_models
