"""Which tier dispatches next, at which tier a job runs, and which seed it gets.

TierShares is simulated the way the dispatch loop uses it: each pick takes the first
tier of `order(waiting)` and spends one share of it.
"""

import secrets
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from diffleet_core.resources.generation_job import MAX_SEED, GenerationJobSpec, JobPhase, Tier
from diffleet_operator.cache.jobs import TrackedJob, behind
from diffleet_operator.queue.admission import TIER_LABEL, choose_seed, effective_tier, seed_of
from diffleet_operator.queue.held import Admission
from diffleet_operator.queue.tier_shares import TierShares

E, P, S, F = Tier.ENTERPRISE, Tier.PRO, Tier.STANDARD, Tier.FREE
WEIGHTS = {E: 8, P: 4, S: 2, F: 1}


def picks(waiting: Iterable[Tier], count: int, shares: TierShares | None = None) -> list[Tier]:
    """`count` dispatches with the same tiers always waiting."""
    shares = shares or TierShares(dict(WEIGHTS))
    chosen = []
    for _ in range(count):
        first = shares.order(set(waiting))[0]
        shares.spend(first)
        chosen.append(first)
    return chosen


def test_enterprise_takes_its_weight_then_free_gets_one() -> None:
    assert picks({E, F}, 27) == ([E] * 8 + [F]) * 3


def test_free_is_not_starved_under_sustained_enterprise_load() -> None:
    counts = Counter(picks({E, F}, 90))
    assert counts == {E: 80, F: 10}


def test_all_tiers_waiting_share_by_weight_in_priority_order() -> None:
    cycle = [E] * 8 + [P] * 4 + [S] * 2 + [F]
    assert picks({E, P, S, F}, 45) == cycle * 3


@pytest.mark.parametrize("tier", list(Tier))
def test_a_lone_tier_always_goes(tier: Tier) -> None:
    assert picks({tier}, 50) == [tier] * 50


@pytest.mark.parametrize(
    "waiting",
    [set(), {F}, {P}, {E, S}, {P, S, F}],
    ids=["none", "free", "pro", "enterprise+standard", "pro+standard+free"],
)
def test_a_tier_without_work_is_never_returned(waiting: set[Tier]) -> None:
    shares = TierShares(dict(WEIGHTS))
    for _ in range(40):
        order = shares.order(waiting)
        assert set(order) == waiting
        assert len(order) == len(waiting)
        if order:
            shares.spend(order[0])


def test_order_puts_tiers_with_shares_left_first_then_by_priority() -> None:
    shares = TierShares(dict(WEIGHTS))
    for _ in range(8):
        shares.spend(E)
    assert shares.order({E, P, F}) == [P, F, E]
    assert shares.order({E, S}) == [S, E]


def test_shares_refill_when_every_waiting_tier_has_spent() -> None:
    shares = TierShares(dict(WEIGHTS))
    picks({E}, 8, shares)
    assert shares.left[E] == 0
    assert shares.order({E}) == [E]
    assert shares.left == WEIGHTS


def test_a_job_that_cannot_place_keeps_its_tiers_share() -> None:
    """When free's job places nowhere the loop dispatches enterprise past its share;
    free still comes first once it can."""
    shares = TierShares(dict(WEIGHTS))
    picks({E}, 8, shares)
    for _ in range(3):
        order = shares.order({E, F})
        assert order == [F, E]
        shares.spend(order[1])
    assert shares.order({E, F}) == [F, E]


@pytest.mark.parametrize(
    ("labels", "priority", "tier"),
    [
        pytest.param({}, None, F, id="no label: free"),
        pytest.param({"other": "x"}, None, F, id="other labels only: free"),
        pytest.param({TIER_LABEL: "pro"}, None, P, id="label pro"),
        pytest.param({TIER_LABEL: "enterprise"}, None, E, id="label enterprise"),
        pytest.param({TIER_LABEL: "pro"}, S, S, id="pro lowered to standard"),
        pytest.param({TIER_LABEL: "pro"}, F, F, id="pro lowered to free"),
        pytest.param({TIER_LABEL: "pro"}, P, P, id="pro at pro"),
        pytest.param({TIER_LABEL: "pro"}, E, P, id="never raised above pro"),
        pytest.param({}, E, F, id="free never raised"),
        pytest.param({TIER_LABEL: "gold"}, None, F, id="invalid label: free"),
        pytest.param({TIER_LABEL: "Pro"}, None, F, id="labels are case sensitive"),
        pytest.param({TIER_LABEL: ""}, None, F, id="empty label: free"),
        pytest.param({TIER_LABEL: "gold"}, E, F, id="invalid label not raised by priority"),
    ],
)
def test_effective_tier(labels: dict[str, str], priority: Tier | None, tier: Tier) -> None:
    assert effective_tier(labels, priority) is tier


def spec(**fields: Any) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate({"model": "sdxl", "prompt": "a cat", **fields})


@pytest.mark.parametrize("seed", [0, 1, 42, MAX_SEED])
def test_choose_seed_keeps_a_given_seed(seed: int) -> None:
    assert choose_seed(spec(seed=seed)) == seed


def test_choose_seed_picks_within_range() -> None:
    seeds = {choose_seed(spec()) for _ in range(200)}
    assert all(0 <= seed <= MAX_SEED for seed in seeds)
    assert len(seeds) > 1


@pytest.mark.parametrize("drawn", [0, MAX_SEED])
def test_choose_seed_can_draw_both_ends_of_the_range(
    monkeypatch: pytest.MonkeyPatch, drawn: int
) -> None:
    bounds: list[int] = []

    def randbelow(bound: int) -> int:
        bounds.append(bound)
        return drawn

    monkeypatch.setattr(secrets, "randbelow", randbelow)
    assert choose_seed(spec()) == drawn
    assert bounds == [MAX_SEED + 1]


def tracked(
    attempts: int, phase: JobPhase | None, seed: int | None = None, spec_seed: int | None = None
) -> TrackedJob:
    status: dict[str, Any] = {"attempts": attempts}
    if phase is not None:
        status["phase"] = phase.value
    if seed is not None:
        status["seed"] = seed
    job_spec: dict[str, Any] = {"model": "sdxl", "prompt": "a cat"}
    if spec_seed is not None:
        job_spec["seed"] = spec_seed
    return TrackedJob.from_body(
        {
            "metadata": {
                "namespace": "ns",
                "name": "job",
                "uid": "uid-1",
                "creationTimestamp": datetime(2025, 1, 1, tzinfo=UTC).isoformat(),
            },
            "spec": job_spec,
            "status": status,
        }
    )


@pytest.mark.parametrize(
    ("attempts", "phase", "attempt", "expected"),
    [
        pytest.param(0, None, 1, True, id="status not yet admitted"),
        pytest.param(1, JobPhase.PENDING, 1, True, id="this attempt, still Pending"),
        pytest.param(1, JobPhase.QUEUED, 1, False, id="this attempt, Queued"),
        pytest.param(1, JobPhase.SCHEDULED, 1, False, id="this attempt, Scheduled"),
        pytest.param(1, JobPhase.QUEUED, 2, True, id="older attempt on the status"),
        pytest.param(2, JobPhase.QUEUED, 1, False, id="status already past this attempt"),
        pytest.param(2, JobPhase.PENDING, 1, False, id="newer attempt Pending"),
    ],
)
def test_behind(attempts: int, phase: JobPhase | None, attempt: int, expected: bool) -> None:
    assert behind(tracked(attempts, phase), attempt) is expected


def held_admission(seed: int) -> Admission:
    return Admission("uid-1", 1, F, "diffleet.jobs.free", seed, datetime.now(UTC))


def test_seed_of_is_the_held_admissions_then_the_status_then_the_specs() -> None:
    assert seed_of(tracked(1, JobPhase.PENDING, spec_seed=7), held_admission(3)) == 3
    assert seed_of(tracked(1, JobPhase.QUEUED, seed=5, spec_seed=7)) == 5
    assert seed_of(tracked(0, None, spec_seed=7)) == 7
    # Never 0 by default: a job with no seed anywhere gets a random one, as at admission.
    assert {seed_of(tracked(0, None)) for _ in range(50)} != {0}
