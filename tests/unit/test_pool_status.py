"""A GPUPool's status (autoscaler/pool_status.py) and which fleet serves it (cache/pools.py)."""

from typing import Any

from diffleet_operator.autoscaler.pool_status import PoolCounts, pool_status
from diffleet_operator.cache.pools import fleet_of

T1, T2 = "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"


def status(
    previous: dict[str, Any], replicas: int, ready: int, desired: int, now: str = T1
) -> dict[str, Any]:
    counts = PoolCounts(replicas=replicas, ready=ready, busy=0, desired=desired, queued_jobs=3)
    return pool_status(previous, counts, generation=2, scale_down_delay=60, scaled_at=None, now=now)


def conditions(found: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["lastTransitionTime"]) for c in found["conditions"]
    }


def test_an_unchanged_pool_yields_an_equal_status() -> None:
    first = status({}, replicas=2, ready=2, desired=2)
    assert status(first, replicas=2, ready=2, desired=2, now=T2) == first
    assert first["observedGeneration"] == 2
    assert first["queuedJobs"] == 3
    assert "lastScaleTime" not in first


def test_conditions_say_how_far_the_pool_is_and_keep_their_transition_time() -> None:
    starting = status({}, replicas=4, ready=1, desired=4)
    assert conditions(starting) == {
        "Ready": ("False", "WorkersStarting", T1),
        "Scaling": ("False", "AtDesiredReplicas", T1),
    }
    scaling_down = status(starting, replicas=4, ready=4, desired=1, now=T2)
    assert conditions(scaling_down) == {
        "Ready": ("True", "WorkersReady", T2),
        "Scaling": ("True", "ScalingDown", T2),
    }
    still = status(scaling_down, replicas=3, ready=3, desired=1, now="2026-01-01T00:00:09Z")
    assert conditions(still)["Scaling"] == ("True", "ScalingDown", T2)


def test_a_pool_belongs_to_the_fleet_its_label_names() -> None:
    assert fleet_of({"metadata": {"name": "a100"}}) == "diffleet-system"
    labelled = {"metadata": {"name": "a100", "labels": {"diffleet.io/fleet": "test-1"}}}
    assert fleet_of(labelled) == "test-1"
