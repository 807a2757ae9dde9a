"""Anti-starvation across tiers: strict priority within weighted credits (8:4:2:1 by
default), refilled when every waiting tier has spent its credit. Under sustained
enterprise load a free job still leaves its queue after every 8 enterprise jobs."""

from dataclasses import dataclass, field

from diffleet_core.resources.generation_job import Tier


@dataclass
class TierCredits:
    """Weighted credits per tier: strict priority among tiers that still have credit."""

    weights: dict[Tier, int]
    credits: dict[Tier, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.credits = dict(self.weights)

    def order(self, waiting: set[Tier]) -> list[Tier]:
        if waiting and all(self.credits[tier] <= 0 for tier in waiting):
            self.credits = dict(self.weights)
        ranked = [tier for tier in Tier if tier in waiting]
        return [t for t in ranked if self.credits[t] > 0] + [
            t for t in ranked if self.credits[t] <= 0
        ]

    def spend(self, tier: Tier) -> None:
        self.credits[tier] -= 1
