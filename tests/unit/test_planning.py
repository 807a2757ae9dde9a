"""The planner (scheduler.planning): one round's choices table-driven, and small traces
whose fewest loads are known, run through bench/bound.py's simulation."""

from dataclasses import dataclass, field

import pytest

from bench import bound
from bench.traces import Record
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.scheduler.batching import worker_of
from diffleet_operator.scheduler.planning import Costs, Job, Knobs, Popularity, Worker, plan

COSTS = Costs(load_seconds=8.0, run_seconds=3.0)


def job(key: str, model: str, waited: float = 0.0, workers: set[str] | None = None) -> Job:
    return Job(key, model, waited, frozenset(workers) if workers is not None else None)


def idle(worker_id: str, *hot: str, slots: int | None = 2, warm: str = "") -> Worker:
    return Worker(worker_id, free_slots=1, hot=hot, hot_slots=slots, warm=frozenset(warm))


def busy(worker_id: str, *hot: str, frees_in: float) -> Worker:
    return Worker(worker_id, free_slots=0, hot=hot, hot_slots=2, frees_in=(frees_in,))


@dataclass(frozen=True)
class Case:
    jobs: list[Job]
    workers: list[Worker]
    # (job key, worker id) in dispatch order.
    expected: list[tuple[str, str]]
    rates: dict[str, float] = field(default_factory=dict)


CASES = {
    "a hot job goes first, the cold one waits": Case(
        [job("b", "B"), job("a", "A")], [idle("w1", "A")], [("a", "w1")]
    ),
    "jobs of one model gather on its holder, the other model on its own": Case(
        [job("a1", "A"), job("a2", "A"), job("b", "B")],
        [idle("w1", "A"), idle("w2", "B")],
        [("a1", "w1"), ("b", "w2")],
    ),
    "waiting for a holder that frees soon beats a load": Case(
        [job("a", "A")], [busy("w1", "A", frees_in=1.0), idle("w2", "B")], []
    ),
    "more jobs than the holders serve within the horizon: a second copy is loaded": Case(
        [job(f"a{i}", "A") for i in range(10)],
        [busy("w1", "A", frees_in=1.0), idle("w2")],
        [("a0", "w2")],
    ),
    "a job past its patience is served in order, whatever it costs": Case(
        [job("a", "A"), job("b", "B", waited=200.0)], [idle("w1", "A")], [("b", "w1")]
    ),
    "a higher tier's job that needs a load goes before a lower tier's hot one": Case(
        [Job("f", "F", 0.0, None, rank=1), Job("e", "E", 0.0, None, rank=0)],
        [idle("w1", "F")],
        [("e", "w1")],
    ),
    "a due job (its namespace fell behind its share) is served in order": Case(
        [job("a", "A"), Job("b", "B", 0.0, None, due=True)], [idle("w1", "A")], [("b", "w1")]
    ),
    "the model with most waiting jobs is loaded first": Case(
        [job("b", "B"), job("c1", "C"), job("c2", "C")], [idle("w1")], [("c1", "w1")]
    ),
    "fair order decides between equals": Case(
        [job("b", "B"), job("c", "C")], [idle("w1")], [("b", "w1")]
    ),
    "a load goes where there is room rather than evicting what the queue needs": Case(
        [job("c", "C"), job("a", "A"), job("b", "B")],
        [idle("w1", "A", "B"), idle("w2", "A", "B"), idle("w3")],
        [("a", "w1"), ("b", "w2"), ("c", "w3")],
    ),
    "between equal evictions, a load goes where the model is on disk": Case(
        [job("c", "C")], [idle("w1"), idle("w2", warm="C")], [("c", "w2")]
    ),
    "then to the lowest id": Case([job("c", "C")], [idle("w2"), idle("w1")], [("c", "w1")]),
    "a job that no free worker may run does not block the next": Case(
        [job("x", "A", workers={"w9"}), job("y", "B")], [idle("w1")], [("y", "w1")]
    ),
    "a job runs only where it may, even if another worker holds its model": Case(
        [job("a", "A", workers={"w2"})], [idle("w1", "A"), idle("w2")], [("a", "w2")]
    ),
    "a load waits for a busy worker whose eviction costs the queue less": Case(
        [job("c", "C")],
        [idle("w1", "A", "B"), busy("w2", "D", "E", frees_in=2.0)],
        [],
        rates={"A": 1.0, "B": 1.0},
    ),
    "but only for the horizon": Case(
        [job("c", "C", waited=30.0)],
        [idle("w1", "A", "B"), busy("w2", "D", "E", frees_in=2.0)],
        [("c", "w1")],
        rates={"A": 1.0, "B": 1.0},
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_one_round(name: str) -> None:
    case = CASES[name]
    result = plan(case.jobs, case.workers, COSTS, Knobs(), case.rates)
    assert [(j.key, w) for j, w in result.assignments] == case.expected


@pytest.mark.parametrize(
    ("hot", "pinned", "rates", "keep"),
    [
        # Nothing known: the least recently used goes.
        (("A", "B"), frozenset[str](), {}, ["B", "C"]),
        # A is popular: B goes though A is older.
        (("A", "B"), frozenset[str](), {"A": 0.5}, ["A", "C"]),
        # A pre-warmed model stays, whatever the queue needs.
        (("A", "B"), frozenset({"A"}), {"B": 0.5}, ["A", "C"]),
        # Room: nothing goes.
        (("A",), frozenset[str](), {}, ["A", "C"]),
    ],
)
def test_keep_hot_evicts_what_the_queue_needs_least(
    hot: tuple[str, ...], pinned: frozenset[str], rates: dict[str, float], keep: list[str]
) -> None:
    worker = Worker("w1", free_slots=1, hot=hot, hot_slots=2, pinned=pinned)
    result = plan([job("c", "C")], [worker], COSTS, Knobs(), rates)
    assert result.keep_hot == {"w1": keep}


def test_an_unbounded_hot_tier_never_evicts() -> None:
    result = plan([job("c", "C")], [idle("w1", "A", "B", slots=None)], COSTS)
    assert result.keep_hot == {"w1": ["A", "B", "C"]}


def test_popularity_decays_by_its_half_life() -> None:
    popularity = Popularity(half_life=10.0)
    for _ in range(10):
        popularity.observe("A", now=0.0)
    now = popularity.rates(0.0)["A"]
    assert popularity.rates(10.0)["A"] == pytest.approx(now / 2)


def trace(*models: str, t: float = 0.0, seconds: float = 1.0) -> list[Record]:
    return [{"t": t, "model": model, "lora": None, "seconds": seconds} for model in models]


@pytest.mark.parametrize(
    ("records", "fleet", "fewest"),
    [
        # One worker, one hot slot, everything waiting at once: one load per model.
        (trace("A", "B", "A", "B", "A"), bound.Fleet(1, 1, 1, 8.0), 2),
        (trace("A", "B", "C", "A", "B", "C"), bound.Fleet(1, 1, 2, 8.0), 3),
        # Two workers: each model on one of them.
        (trace("A", "B", "A", "B", "A", "B"), bound.Fleet(2, 1, 1, 8.0), 2),
        # Two slots per worker, four models, two workers: no eviction needed.
        (trace(*"ABCDABCDABCD"), bound.Fleet(2, 1, 2, 8.0), 4),
    ],
)
def test_small_traces_reach_their_fewest_loads(
    records: list[Record], fleet: bound.Fleet, fewest: int
) -> None:
    assert bound.simulate(records, fleet, "planner")["checkpoint_loads"] == fewest


def test_the_dispatcher_s_view_of_a_worker() -> None:
    """Slots free when their job has run its model's expected time since dispatch; a job
    dispatched by another operator has half a run left; pinned: pre-warmed and hot."""
    view = WorkerView(
        worker_id="w1",
        pool="t4",
        gpu_type="t4",
        node="n1",
        vram_gib=16,
        concurrency=3,
        draining=False,
        hot_models=frozenset({"A", "B"}),
        warm_models=frozenset({"C"}),
        in_flight=frozenset({"old"}),
        assumed=frozenset({"j1"}),
        hot_order=("B", "A"),
        hot_slots=2,
        running=(("j1", "A", 100.0),),
    )
    costs = Costs(load_seconds=8.0, run_seconds=4.0, run_by_model={"A": 3.0})
    worker = worker_of(view, costs, pinned=frozenset({"B", "Z"}), monotonic=101.0)
    assert worker == Worker(
        "w1",
        free_slots=1,
        hot=("B", "A"),
        hot_slots=2,
        frees_in=tuple(sorted(worker.frees_in)),
        pinned=frozenset({"B"}),
        warm=frozenset({"C"}),
    )
    assert sorted(worker.frees_in) == [2.0, 2.0]  # A: 3 s run, 1 s in; "old": half of 4 s
