"""Anti-starvation across tiers: strict priority within weighted tier shares (8:4:2:1 by
default), refilled when every waiting tier has used its share. Under sustained
enterprise load a free job still leaves its queue after every 8 enterprise jobs.

("Credits" is the API's word for money; these shares are dispatch weights only.)"""

from dataclasses import dataclass, field

from diffleet_core.resources.generation_job import Tier


@dataclass
class TierShares:
    """Dispatches left per tier in this round: strict priority among tiers with some left."""

    weights: dict[Tier, int]
    left: dict[Tier, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.left = dict(self.weights)

    def order(self, waiting: set[Tier]) -> list[Tier]:
        if waiting and all(self.left[tier] <= 0 for tier in waiting):
            self.left = dict(self.weights)
        ranked = [tier for tier in Tier if tier in waiting]
        return [t for t in ranked if self.left[t] > 0] + [t for t in ranked if self.left[t] <= 0]

    def spend(self, tier: Tier) -> None:
        self.left[tier] -= 1
