"""FleetInventory: the one owner of the fleet's state, fed by worker Leases.

The scheduler reads snapshots of immutable views; a dispatch is assumed at once and
forgotten when the job ends; workers whose Lease ran out are removed by `expired()`,
judged by when the operator saw each Lease change (a fake monotonic clock here), never
by the renewTime a worker's clock wrote.
"""

from collections.abc import Callable, Iterable
from dataclasses import FrozenInstanceError

import pytest

from diffleet_core.fleet import WorkerInventory
from diffleet_operator.cache.fleet import FleetInventory, WorkerView

# Monotonic seconds of the fake clock; the fleet's watch listed the Leases at 0.
T0 = 1000.0
DURATION = 10.0


def inventory(
    worker_id: str, jobs: Iterable[str] = (), concurrency: int = 2, pool: str = "t4"
) -> WorkerInventory:
    return WorkerInventory(
        worker_id=worker_id,
        pool=pool,
        vram_gib=16,
        concurrency=concurrency,
        jobs_in_flight=list(jobs),
    )


def renew(
    fleet: FleetInventory, worker: WorkerInventory, at: float, renewal: str = "2025-01-01T12:00:00Z"
) -> None:
    """The watch shows the worker's Lease with this renewTime at monotonic time `at`."""
    fleet.upsert(worker, renewal=renewal, duration=DURATION, now=at)


def fleet_of(*workers: WorkerInventory, seen_at: float = T0) -> FleetInventory:
    fleet = FleetInventory(now=0.0)
    for worker in workers:
        renew(fleet, worker, seen_at)
    fleet.changed.clear()
    return fleet


def views(fleet: FleetInventory) -> dict[str, WorkerView]:
    return {view.worker_id: view for view in fleet.snapshot()}


def test_upsert_adds_then_replaces_a_worker() -> None:
    fleet = FleetInventory(now=0.0)
    renew(fleet, inventory("w1", pool="t4"), T0)
    renew(fleet, inventory("w2"), T0)
    renew(fleet, inventory("w1", pool="a100", jobs=["j1"]), T0)
    snapshot = views(fleet)
    assert sorted(snapshot) == ["w1", "w2"]
    assert snapshot["w1"].pool == "a100"
    assert snapshot["w1"].jobs == frozenset({"j1"})


def test_mutating_the_snapshot_list_does_not_change_the_inventory() -> None:
    fleet = fleet_of(inventory("w1"), inventory("w2"))
    snapshot = fleet.snapshot()
    snapshot.clear()
    assert sorted(views(fleet)) == ["w1", "w2"]


def test_a_snapshot_does_not_see_later_changes() -> None:
    fleet = fleet_of(inventory("w1"))
    before = fleet.snapshot()
    fleet.assume("w1", "j1")
    renew(fleet, inventory("w2"), T0)
    assert [view.worker_id for view in before] == ["w1"]
    assert before[0].assumed == frozenset()
    assert views(fleet)["w1"].assumed == frozenset({"j1"})


def test_a_snapshot_cannot_be_changed() -> None:
    fleet = fleet_of(inventory("w1"))
    [view] = fleet.snapshot()
    with pytest.raises(FrozenInstanceError):
        view.pool = "h100"  # type: ignore[misc]
    assert not hasattr(view.in_flight, "add")
    assert not hasattr(view.hot_models, "add")


def test_a_snapshot_shares_nothing_with_the_inventory_it_came_from() -> None:
    leased = inventory("w1")
    fleet = fleet_of(leased)
    leased.jobs_in_flight.append("j1")
    assert views(fleet)["w1"].load == 0


def test_assume_counts_the_job_until_a_lease_lists_it() -> None:
    fleet = fleet_of(inventory("w1"))
    fleet.assume("w1", "j1")
    fleet.assume("w1", "j2")
    view = views(fleet)["w1"]
    assert view.assumed == frozenset({"j1", "j2"})
    assert view.load == 2

    renew(fleet, inventory("w1", jobs=["j1"]), T0 + 10)
    view = views(fleet)["w1"]
    assert view.assumed == frozenset({"j2"})
    assert view.jobs == frozenset({"j1", "j2"})
    assert view.load == 2


def test_assume_on_an_unknown_worker_does_nothing() -> None:
    fleet = fleet_of(inventory("w1"))
    fleet.assume("gone", "j1")
    assert sorted(views(fleet)) == ["w1"]
    assert views(fleet)["w1"].assumed == frozenset()


def test_forget_removes_the_job_from_assumed_and_from_jobs_in_flight() -> None:
    fleet = fleet_of(inventory("w1", jobs=["j1", "j2"]), inventory("w2"))
    fleet.assume("w2", "j3")
    fleet.assume("w1", "j3")

    fleet.forget("j1")
    fleet.forget("j3")
    snapshot = views(fleet)
    assert snapshot["w1"].in_flight == frozenset({"j2"})
    assert snapshot["w1"].assumed == frozenset()
    assert snapshot["w2"].assumed == frozenset()
    assert snapshot["w1"].load == 1
    assert snapshot["w2"].load == 0


def test_forget_does_not_change_a_snapshot_taken_before() -> None:
    fleet = fleet_of(inventory("w1", jobs=["j1"]))
    before = fleet.snapshot()
    fleet.forget("j1")
    assert before[0].in_flight == frozenset({"j1"})
    assert views(fleet)["w1"].in_flight == frozenset()


def test_remove_returns_the_worker_as_it_was() -> None:
    fleet = fleet_of(inventory("w1", jobs=["j1"]))
    fleet.assume("w1", "j2")
    removed = fleet.remove("w1")
    assert removed is not None
    assert removed.jobs == frozenset({"j1", "j2"})
    assert fleet.snapshot() == []
    assert fleet.remove("w1") is None


@pytest.mark.parametrize(
    ("now", "lost"),
    [
        pytest.param(T0 + DURATION - 1, [], id="before every expiry"),
        pytest.param(T0 + DURATION, [], id="at the first expiry (not past it)"),
        pytest.param(T0 + DURATION + 1, ["early"], id="past the first"),
        pytest.param(T0 + 300, ["early", "late"], id="past both"),
    ],
)
def test_expired_removes_and_returns_workers_past_their_expiry(now: float, lost: list[str]) -> None:
    fleet = FleetInventory(now=0.0)
    renew(fleet, inventory("early"), T0)
    renew(fleet, inventory("late"), T0 + 30)
    fleet.changed.clear()

    expired = fleet.expired(now)
    assert sorted(view.worker_id for view in expired) == lost
    assert sorted(views(fleet)) == sorted({"early", "late"} - set(lost))
    assert fleet.changed.is_set() is bool(lost)
    assert fleet.expired(now) == []


def test_a_renewed_lease_moves_the_expiry() -> None:
    fleet = fleet_of(inventory("w1"), seen_at=T0)
    renew(fleet, inventory("w1"), T0 + 30, renewal="2025-01-01T12:00:30Z")
    assert fleet.expired(T0 + 30 + DURATION - 1) == []
    assert sorted(views(fleet)) == ["w1"]


@pytest.mark.parametrize(
    "renewal",
    [
        pytest.param("1970-01-01T00:00:00Z", id="worker clock far behind"),
        pytest.param("2999-01-01T00:00:00Z", id="worker clock far ahead"),
    ],
)
def test_a_skewed_renew_time_does_not_decide_expiry(renewal: str) -> None:
    """Only whether the Lease changed counts, and when this operator saw it change."""
    fleet = FleetInventory(now=0.0)
    renew(fleet, inventory("w1"), T0, renewal=renewal)
    renew(fleet, inventory("w1"), T0 + 8, renewal=renewal + "x")  # renewed, still skewed
    assert fleet.expired(T0 + 8 + DURATION - 1) == []
    [lost] = fleet.expired(T0 + 8 + DURATION + 1)
    assert lost.worker_id == "w1"


def test_a_lease_that_stops_changing_expires_however_often_the_watch_shows_it() -> None:
    fleet = FleetInventory(now=0.0)
    for second in range(0, 15, 2):  # the same renewTime shown again and again
        renew(fleet, inventory("w1"), T0 + second)
    [lost] = fleet.expired(T0 + DURATION + 1)
    assert lost.worker_id == "w1"


def test_a_relisted_watch_gives_every_worker_one_duration_of_grace() -> None:
    """Renewals missed while the watch was down do not count against a worker."""
    fleet = fleet_of(inventory("w1"), seen_at=T0)
    fleet.relisted(T0 + 60)
    renew(fleet, inventory("w1"), T0 + 60)  # listed again, renewTime not seen to change
    assert fleet.expired(T0 + 60 + DURATION - 1) == []
    [lost] = fleet.expired(T0 + 60 + DURATION + 1)
    assert lost.worker_id == "w1"


def test_expired_returns_the_lost_workers_jobs() -> None:
    fleet = fleet_of(inventory("w1", jobs=["j1"]))
    fleet.assume("w1", "j2")
    [lost] = fleet.expired(T0 + DURATION + 1)
    assert lost.jobs == frozenset({"j1", "j2"})


def _upsert_new(fleet: FleetInventory) -> None:
    renew(fleet, inventory("w9"), T0)


def _upsert_existing(fleet: FleetInventory) -> None:
    renew(fleet, inventory("w1"), T0)


def _remove(fleet: FleetInventory) -> None:
    fleet.remove("w1")


def _forget(fleet: FleetInventory) -> None:
    fleet.forget("j1")


def _expire(fleet: FleetInventory) -> None:
    fleet.expired(T0 + DURATION + 1)


@pytest.mark.parametrize("change", [_upsert_new, _upsert_existing, _remove, _forget, _expire])
def test_changes_set_the_changed_event(change: Callable[[FleetInventory], None]) -> None:
    fleet = fleet_of(inventory("w1", jobs=["j1"]))
    assert not fleet.changed.is_set()
    change(fleet)
    assert fleet.changed.is_set()


def test_snapshot_and_an_unexpired_check_do_not_set_changed() -> None:
    fleet = fleet_of(inventory("w1"))
    fleet.snapshot()
    fleet.expired(T0 + DURATION - 1)
    assert not fleet.changed.is_set()


def test_a_cordoned_worker_reads_as_draining_until_uncordoned() -> None:
    """The pool controller cordons a worker before deleting its pod, even one whose Lease
    has not appeared yet: placement skips draining workers."""
    fleet = fleet_of(inventory("w1"))
    fleet.cordon("w1")
    fleet.cordon("w2")  # its Lease comes later
    renew(fleet, inventory("w2"), at=T0)
    assert {view.worker_id: view.draining for view in fleet.snapshot()} == {
        "w1": True,
        "w2": True,
    }
    fleet.uncordon("w1")
    assert [view.worker_id for view in fleet.snapshot() if not view.draining] == ["w1"]


def test_a_dispatch_predicts_the_hot_set_until_the_job_ends() -> None:
    """The worker holds A and B in 2 hot slots; a job of C evicts what keep_hot leaves
    out (A, though B is older), as the worker will, before its Lease says so."""
    worker = inventory("w1", concurrency=1).model_copy(
        update={"hot_models": ["B", "A"], "hot_slots": 2}
    )
    fleet = fleet_of(worker)
    fleet.assume("w1", "j1", "C", keep_hot=["B", "C"])
    view = views(fleet)["w1"]
    assert view.hot_order == ("B", "C")
    assert view.hot_models == frozenset({"A", "B"})  # what the worker reported, unchanged
    assert [(uid, model) for uid, model, _ in view.running] == [("j1", "C")]
    # The Lease lists the job: still predicted (C loads); the job ends: the report rules.
    renew(fleet, worker.model_copy(update={"jobs_in_flight": ["j1"]}), T0 + 1)
    assert views(fleet)["w1"].hot_order == ("B", "C")
    fleet.forget("j1")
    assert views(fleet)["w1"].hot_order == ("B", "A")
    assert views(fleet)["w1"].running == ()


def test_without_keep_hot_the_least_recently_used_goes_and_unbounded_keeps_all() -> None:
    bounded = inventory("w1").model_copy(update={"hot_models": ["B", "A"], "hot_slots": 2})
    unbounded = inventory("w2").model_copy(update={"hot_models": ["B", "A"]})
    fleet = fleet_of(bounded, unbounded)
    fleet.assume("w1", "j1", "C")
    fleet.assume("w2", "j2", "C")
    assert views(fleet)["w1"].hot_order == ("A", "C")
    assert views(fleet)["w2"].hot_order == ("B", "A", "C")


def test_occupancy_is_learned_from_jobs_given_where_their_model_was_hot() -> None:
    worker = inventory("w1").model_copy(update={"hot_models": ["A"], "hot_slots": 2})
    fleet = fleet_of(worker)
    fleet.assume("w1", "j1", "A")  # hot there: its slot's occupancy counts
    fleet.assume("w1", "j2", "B")  # a load: it does not
    fleet.forget("j1")
    fleet.forget("j2")
    assert set(fleet.occupancy()) == {"A"}
    assert fleet.occupancy()["A"] >= 0
