"""Which workers hold each model, from the fleet's views, as ModelCache status shows it."""

from diffleet_core.fleet import WorkerInventory
from diffleet_core.resources.model_cache import ModelCacheStatus
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.model_presence import MAX_NAMED_WORKERS, Presence, presence_by_digest


def worker(worker_id: str, hot: list[str], warm: list[str]) -> WorkerView:
    return WorkerView.of(
        WorkerInventory(
            worker_id=worker_id, pool="t4", vram_gib=16, hot_models=hot, warm_models=warm
        )
    )


def test_presence_groups_workers_by_digest() -> None:
    fleet = [worker("a", ["x"], ["x", "y"]), worker("b", [], ["y"]), worker("c", ["x"], [])]
    found = presence_by_digest(fleet)
    assert found == {
        "x": Presence(hot=frozenset({"a", "c"}), warm=frozenset({"a"})),
        "y": Presence(hot=frozenset(), warm=frozenset({"a", "b"})),
    }


def test_status_names_workers_sorted_and_counts_them_all() -> None:
    many = frozenset(f"w{n:03d}" for n in range(MAX_NAMED_WORKERS + 8))
    status = Presence(hot=many, warm=frozenset({"b", "a"})).status()
    assert status["hotReplicas"] == MAX_NAMED_WORKERS + 8
    assert status["hotWorkers"] == sorted(many)[:MAX_NAMED_WORKERS]
    assert (status["warmWorkers"], status["warmReplicas"]) == (["a", "b"], 2)


def test_a_status_that_already_shows_the_presence_needs_no_write() -> None:
    presence = Presence(hot=frozenset({"a"}), warm=frozenset())
    written = ModelCacheStatus.model_validate(presence.status())
    assert presence.shown_by(written)
    assert not Presence(hot=frozenset({"b"})).shown_by(written)
    assert Presence().shown_by(ModelCacheStatus())
