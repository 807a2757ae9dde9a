"""What waiting trainings add to the autoscaler's demand (pure): trainings of the same
needs count as ceil(weight x their number) waiting jobs, so a queue of trainings grows a
pool less than as many inference jobs would (and one alone, at a weight above 0, does)."""

import math
from collections import defaultdict
from collections.abc import Sequence

from diffleet_operator.autoscaler.demand import WaitingJob
from diffleet_operator.scheduler.eligibility import Requirements


def weighted(waiting: Sequence[tuple[str, Requirements]], weight: float) -> list[WaitingJob]:
    """`waiting`: (uid, needs) of the queued trainings, oldest first."""
    by_needs: defaultdict[Requirements, list[str]] = defaultdict(list)
    for uid, needs in waiting:
        by_needs[needs].append(uid)
    counted = []
    for needs, uids in by_needs.items():
        for uid in uids[: math.ceil(weight * len(uids))]:
            counted.append(WaitingJob(uid, needs))
    return counted
