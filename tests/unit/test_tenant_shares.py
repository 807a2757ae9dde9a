"""Fair share between namespaces within a tier (queue.tenant_shares).

TenantShares is simulated the way the dispatch loop uses it: each dispatch takes the
first entry of `order(...)` that can place and spends one share of its namespace.
"""

from collections import Counter
from collections.abc import Callable, Mapping

import pytest

from diffleet_core import MAX_RUNNING_JOBS_ANNOTATION, SHARE_WEIGHT_ANNOTATION
from diffleet_core.resources.generation_job import Tier
from diffleet_operator.queue.tenant_shares import LAG_BOUND, TenantPolicy, TenantShares

F = Tier.FREE
Queues = dict[str, list[str]]


class Loop:
    """Queued jobs per namespace (names "<namespace>-<n>"), dispatched one at a time."""

    def __init__(self, policies: Mapping[str, TenantPolicy] | None = None) -> None:
        self.shares = TenantShares()
        self.policies = dict(policies or {})
        self.entries: list[tuple[str, str]] = []  # (namespace, job), in arrival order
        self.dispatched: list[str] = []

    def submit(self, namespace: str, count: int) -> None:
        self.policies.setdefault(namespace, TenantPolicy())
        start = sum(1 for ns, _ in self.entries if ns == namespace)
        start += sum(1 for job in self.dispatched if job.startswith(f"{namespace}-"))
        self.entries += [(namespace, f"{namespace}-{n}") for n in range(start, start + count)]

    def dispatch(
        self,
        count: int,
        placeable: Callable[[str], bool] = lambda _: True,
        running: Mapping[str, int] | None = None,
    ) -> list[str]:
        chosen = []
        for _ in range(count):
            order = self.shares.order(F, self.entries, self.policies, running or {})
            job = next(job for job in order if placeable(job))
            namespace = job.rpartition("-")[0]
            self.entries.remove((namespace, job))
            self.shares.spend(F, namespace, self.policies[namespace].weight)
            chosen.append(job)
        self.dispatched += chosen
        return chosen


def namespaces(jobs: list[str]) -> list[str]:
    return [job.rpartition("-")[0] for job in jobs]


@pytest.mark.parametrize(
    ("annotations", "policy"),
    [
        pytest.param(None, TenantPolicy(1, None), id="none: weight 1, no limit"),
        pytest.param({SHARE_WEIGHT_ANNOTATION: "3"}, TenantPolicy(3, None), id="weight 3"),
        pytest.param({MAX_RUNNING_JOBS_ANNOTATION: "2"}, TenantPolicy(1, 2), id="limit 2"),
        pytest.param({SHARE_WEIGHT_ANNOTATION: "0"}, TenantPolicy(1, None), id="weight 0: 1"),
        pytest.param({SHARE_WEIGHT_ANNOTATION: "-2"}, TenantPolicy(1, None), id="negative: 1"),
        pytest.param({SHARE_WEIGHT_ANNOTATION: "1.5"}, TenantPolicy(1, None), id="not an int"),
        pytest.param({MAX_RUNNING_JOBS_ANNOTATION: "0"}, TenantPolicy(1, None), id="limit 0"),
        pytest.param({MAX_RUNNING_JOBS_ANNOTATION: "many"}, TenantPolicy(1, None), id="limit x"),
    ],
)
def test_policy_from_annotations(annotations: dict[str, str] | None, policy: TenantPolicy) -> None:
    assert TenantPolicy.of(annotations) == policy


def test_a_small_tenant_starts_within_the_next_dispatches_behind_a_long_backlog() -> None:
    loop = Loop()
    loop.submit("big", 1000)
    assert namespaces(loop.dispatch(100)) == ["big"] * 100
    loop.submit("small", 10)
    after = namespaces(loop.dispatch(20))
    # The backlog's next job arrived first (ties go in arrival order), then they alternate.
    assert after == ["big", "small"] * 10


@pytest.mark.parametrize(
    ("weights", "dispatches", "expected"),
    [
        pytest.param((1, 1), 40, (20, 20), id="1:1"),
        pytest.param((3, 1), 40, (30, 10), id="3:1"),
        pytest.param((2, 1), 30, (20, 10), id="2:1"),
        pytest.param((5, 2), 70, (50, 20), id="5:2"),
    ],
)
def test_backlogged_namespaces_share_by_weight(
    weights: tuple[int, int], dispatches: int, expected: tuple[int, int]
) -> None:
    loop = Loop({"a": TenantPolicy(weights[0]), "b": TenantPolicy(weights[1])})
    loop.submit("a", 200)
    loop.submit("b", 200)
    counts = Counter(namespaces(loop.dispatch(dispatches)))
    assert (counts["a"], counts["b"]) == expected


def test_weights_three_to_one_interleave() -> None:
    loop = Loop({"a": TenantPolicy(3), "b": TenantPolicy(1)})
    loop.submit("a", 50)
    loop.submit("b", 50)
    assert namespaces(loop.dispatch(12)) == ["a", "b", "a", "a"] * 3


def test_a_newcomer_joins_at_the_others_share_not_at_zero() -> None:
    """After 50 dispatches of one namespace, a newcomer does not get the next 50."""
    loop = Loop()
    loop.submit("old", 100)
    loop.dispatch(50)
    loop.submit("new", 100)
    counts = Counter(namespaces(loop.dispatch(20)))
    assert counts == {"old": 10, "new": 10}


def test_idle_time_earns_no_credit() -> None:
    loop = Loop()
    loop.submit("steady", 100)
    loop.submit("bursty", 2)
    loop.dispatch(4)  # bursty's two are gone: it stops waiting
    loop.dispatch(30)  # steady alone
    loop.submit("bursty", 20)
    counts = Counter(namespaces(loop.dispatch(10)))
    assert counts == {"steady": 5, "bursty": 5}


@pytest.mark.parametrize(
    ("running", "offered"),
    [
        pytest.param(0, 5, id="none running: all offered"),
        pytest.param(1, 5, id="below the limit: all offered"),
        pytest.param(2, 0, id="at the limit: skipped"),
        pytest.param(5, 0, id="over the limit: skipped"),
    ],
)
def test_a_namespace_at_its_limit_is_skipped(running: int, offered: int) -> None:
    """Below its limit every job is offered: some may not place (the dispatcher orders
    again after each dispatch, so the limit holds within a round)."""
    shares = TenantShares()
    policies = {"capped": TenantPolicy(max_running=2), "free": TenantPolicy()}
    entries = [("capped", f"capped-{n}") for n in range(5)] + [("free", "free-0")]
    order = shares.order(F, entries, policies, {"capped": running})
    assert namespaces(order).count("capped") == offered
    assert "free-0" in order  # the capped namespace is never in the way of others


def test_the_limit_holds_when_ordering_after_each_dispatch() -> None:
    loop = Loop({"capped": TenantPolicy(max_running=2)})
    loop.submit("capped", 5)
    loop.submit("other", 5)
    running: Counter[str] = Counter()
    for _ in range(7):
        job = loop.dispatch(1, running=running)[0]
        running[job.rpartition("-")[0]] += 1
    assert running == {"capped": 2, "other": 5}


def test_a_namespace_whose_policy_is_not_read_yet_is_skipped() -> None:
    order = TenantShares().order(
        F, [("unread", "unread-0"), ("read", "read-0")], {"read": TenantPolicy()}, {}
    )
    assert order == ["read-0"]


def test_jobs_that_cannot_place_never_hold_back_those_behind_them() -> None:
    """Every waiting job is in the order (within room), so the loop goes past those whose
    pool has no capacity: the same tenant's later jobs and other tenants' run."""
    loop = Loop()
    loop.submit("a", 3)  # a-0 and a-1 need a pool without capacity
    loop.submit("b", 2)
    stuck = {"a-0", "a-1"}
    assert sorted(loop.dispatch(3, placeable=lambda job: job not in stuck)) == [
        "a-2",
        "b-0",
        "b-1",
    ]


def test_tiers_keep_separate_shares() -> None:
    shares = TenantShares()
    for _ in range(10):
        shares.spend(Tier.ENTERPRISE, "a", 1)
    policies = {"a": TenantPolicy(), "b": TenantPolicy()}
    entries = [("b", "b-0"), ("a", "a-0")]
    # In the free tier neither has dispatched: arrival order.
    assert shares.order(F, entries, policies, {}) == ["b-0", "a-0"]


def test_a_namespace_passed_over_lag_bound_times_falls_behind() -> None:
    """Placement dispatched only the big namespace's jobs (say, on the worker that holds
    their model): after LAG_BOUND of them the small one is behind, and its next job due."""
    loop = Loop()
    loop.submit("big", 10)
    loop.submit("small", 2)
    for dispatched in range(1, LAG_BOUND + 1):
        loop.shares.order(F, loop.entries, loop.policies, {})
        assert not loop.shares.behind(F, "small")
        loop.shares.spend(F, "big", 1)
        loop.entries.remove(("big", f"big-{dispatched - 1}"))
    loop.shares.order(F, loop.entries, loop.policies, {})
    assert loop.shares.behind(F, "small")
    assert not loop.shares.behind(F, "big")
