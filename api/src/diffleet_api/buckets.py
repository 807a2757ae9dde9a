"""Token-bucket arithmetic (pure): a bucket holds up to `capacity` tokens and refills at
`capacity / window` tokens per second; a request takes `cost` tokens or is refused with
the time until enough have come back."""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketPolicy:
    name: str
    capacity: int
    window_seconds: float

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.capacity / self.window_seconds


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tokens: float
    """Tokens left after this decision (what the bucket stores)."""
    retry_after_seconds: int
    """0 when allowed; else whole seconds until `cost` tokens are back."""
    reset_seconds: int
    """Whole seconds until the bucket is full again."""

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.tokens))


def refill(policy: BucketPolicy, tokens: float, elapsed_seconds: float) -> float:
    """The tokens of a bucket that held `tokens` `elapsed_seconds` ago."""
    return min(float(policy.capacity), tokens + max(0.0, elapsed_seconds) * policy.rate)


def take(policy: BucketPolicy, tokens: float, elapsed_seconds: float, cost: int) -> Decision:
    """Refills a bucket that held `tokens` `elapsed_seconds` ago, then takes `cost`."""
    available = refill(policy, tokens, elapsed_seconds)
    if cost <= policy.capacity and available >= cost:
        return granted(policy, available - cost)
    return denied(policy, available, cost)


def granted(policy: BucketPolicy, left: float) -> Decision:
    """A take that succeeded, leaving `left` tokens."""
    return Decision(True, left, 0, _reset(policy, left))


def denied(policy: BucketPolicy, available: float, cost: int) -> Decision:
    """A refused take from a bucket holding `available` tokens: the wait until `cost` are
    back (at least a second), or the whole window when `cost` exceeds the capacity."""
    if cost > policy.capacity:
        wait = math.ceil(policy.window_seconds)
    else:
        wait = max(1, math.ceil((cost - available) / policy.rate))
    return Decision(False, available, wait, _reset(policy, available))


def _reset(policy: BucketPolicy, tokens: float) -> int:
    return math.ceil((policy.capacity - tokens) / policy.rate)
