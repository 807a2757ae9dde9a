"""Which workers pre-warming asks to load a model: a pure function of the model's target,
the fleet snapshot and the orders still awaited."""

from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.scheduler.prewarm import WarmTarget, workers_to_warm
from tests.unit.test_placement import MODEL, NO_POOLS, OTHER, needs, worker


def target(replicas: int, pools: tuple[str, ...] | None = None) -> WarmTarget:
    return WarmTarget(replicas=replicas, needs=needs(pools=pools, tier=None))


def asked(chosen: list[WorkerView]) -> list[str]:
    return [worker.worker_id for worker in chosen]


def test_as_many_workers_as_replicas_are_missing_disk_first_then_least_loaded() -> None:
    fleet = [
        worker("busy", concurrency=2, jobs=["j1"]),
        worker("idle"),
        worker("on-disk", warm=[MODEL], jobs=["j2"]),
        worker("hot", hot=[MODEL]),
    ]
    assert asked(workers_to_warm(target(3), fleet, ordered=set(), pools=NO_POOLS)) == [
        "on-disk",
        "idle",
    ]


def test_nothing_when_enough_are_hot_or_ordered() -> None:
    fleet = [worker("a", hot=[MODEL]), worker("b"), worker("c")]
    assert workers_to_warm(target(1), fleet, ordered=set(), pools=NO_POOLS) == []
    assert workers_to_warm(target(2), fleet, ordered={"b"}, pools=NO_POOLS) == []
    assert asked(workers_to_warm(target(3), fleet, ordered={"b"}, pools=NO_POOLS)) == ["c"]


def test_an_order_to_a_worker_that_has_the_model_hot_now_is_no_longer_awaited() -> None:
    fleet = [worker("a", hot=[MODEL]), worker("b")]
    assert asked(workers_to_warm(target(2), fleet, ordered={"a"}, pools=NO_POOLS)) == ["b"]


def test_only_workers_that_could_run_the_model() -> None:
    fleet = [
        worker("draining", draining=True),
        worker("small", vram=4),
        worker("other-pool", pool="h100"),
        worker("fits", hot=[OTHER]),
    ]
    assert asked(
        workers_to_warm(target(4, pools=("t4",)), fleet, ordered=set(), pools=NO_POOLS)
    ) == ["fits"]
