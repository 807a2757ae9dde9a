"""Fair share between tenants (job namespaces) within a tier: weighted fair queueing on
dispatches. Each namespace waiting in a tier has a virtual time, its dispatches divided
by its weight (namespace annotation diffleet.io/share-weight, default 1); the waiting
jobs are ordered by the virtual time each would be dispatched at, so with weights 3:1
three jobs of one namespace leave for every one of the other, and a namespace that
submits 10 jobs behind another's 1,000 has its first job among the next two dispatches.

Placement may serve jobs out of this order (scheduler.planning groups jobs of one model on
the workers that hold it), but never starve a namespace for it: one that has fallen
`LAG_BOUND` dispatches per weight behind the namespace furthest ahead in its tier has
its next job *due*, served in order whatever it costs.

A namespace that starts waiting (again) joins at the least virtual time of those
waiting: idle time earns no credit, and a long backlog leaves no debt. A namespace at
its limit of jobs running at once (annotation diffleet.io/max-running-jobs) is left out
of the order: skipped, never in the way. Below its limit all its jobs are in the order
(some may not place: their pool has no capacity), so whoever dispatches several in a
round stops at the limit, as the dispatcher does (scheduler.fair_order `at_limit`).

Pure: the dispatcher (scheduler.fair_order) reads the annotations and the running jobs.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

from diffleet_core import MAX_RUNNING_JOBS_ANNOTATION, SHARE_WEIGHT_ANNOTATION
from diffleet_core.resources.generation_job import Tier

T = TypeVar("T")

# Virtual times are compared at this many decimals: 1/3 + 2/3 ties with 1.
_KEY_DIGITS = 9
# How far (in virtual time: dispatches per weight) placement may let a namespace fall
# behind the one furthest ahead before its next job is due.
LAG_BOUND = 4


@dataclass(frozen=True)
class TenantPolicy:
    """A namespace's weight within its tier and its limit on jobs running at once."""

    weight: int = 1
    max_running: int | None = None

    @classmethod
    def of(cls, annotations: Mapping[str, str] | None) -> "TenantPolicy":
        """From the namespace's annotations; a value that is not a positive integer is
        ignored (weight 1, no limit)."""
        annotations = annotations or {}
        weight = _positive(annotations.get(SHARE_WEIGHT_ANNOTATION))
        return cls(weight or 1, _positive(annotations.get(MAX_RUNNING_JOBS_ANNOTATION)))

    def at_limit(self, running: int) -> bool:
        return self.max_running is not None and running >= self.max_running


class TenantShares:
    """The virtual time of every namespace waiting, per tier."""

    def __init__(self) -> None:
        self._clock: dict[Tier, dict[str, Fraction]] = {}

    def order(
        self,
        tier: Tier,
        entries: Sequence[tuple[str, T]],
        policies: Mapping[str, TenantPolicy],
        running: Mapping[str, int],
    ) -> list[T]:
        """The tier's waiting entries, (namespace, item) in arrival order, in fair order:
        by the virtual time each would be dispatched at, ties in arrival order. Entries of
        a namespace without a policy (not read yet) or at its limit are left out."""
        waiting = self._waiting(tier, {namespace for namespace, _ in entries})
        clock = {namespace: float(at) for namespace, at in waiting.items()}
        offered: dict[str, int] = {}
        keyed: list[tuple[float, int, T]] = []
        for index, (namespace, item) in enumerate(entries):
            policy = policies.get(namespace)
            if policy is None or policy.at_limit(running.get(namespace, 0)):
                continue
            k = offered.get(namespace, 0)
            offered[namespace] = k + 1
            at = round(clock[namespace] + k / policy.weight, _KEY_DIGITS)
            keyed.append((at, index, item))
        keyed.sort(key=lambda key: key[:2])
        return [item for _, _, item in keyed]

    def behind(self, tier: Tier, namespace: str) -> bool:
        """The namespace has fallen LAG_BOUND or more behind the one furthest ahead of
        those waiting in the tier (as of the last `order`)."""
        clock = self._clock.get(tier, {})
        if namespace not in clock:
            return False
        return max(clock.values()) - clock[namespace] >= LAG_BOUND

    def spend(self, tier: Tier, namespace: str, weight: int) -> None:
        """One of the namespace's jobs was dispatched at this tier."""
        clock = self._clock.setdefault(tier, {})
        clock[namespace] = clock.get(namespace, Fraction(0)) + Fraction(1, weight)

    def _waiting(self, tier: Tier, namespaces: set[str]) -> dict[str, Fraction]:
        """The tier's clock with exactly these namespaces, newcomers at the least virtual
        time of the others, shifted so that the least is 0."""
        clock = {
            namespace: at
            for namespace, at in self._clock.get(tier, {}).items()
            if namespace in namespaces
        }
        floor = min(clock.values(), default=Fraction(0))
        clock = {namespace: clock.get(namespace, floor) - floor for namespace in namespaces}
        self._clock[tier] = clock
        return clock


def _positive(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else 0
    except ValueError:
        return None
    return number if number > 0 else None
