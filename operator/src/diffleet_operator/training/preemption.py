"""Which trainings give their slot back to inference (pure).

Trainings run below every inference tier: when inference jobs wait and the free slots
cannot take them all, trainings are preempted, one per slot still missing, the one
dispatched last first (it loses the least work); a training already told to stop is not
told again, and counts as a slot on its way."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RunningTraining:
    uid: str
    worker: str
    attempt: int
    # When it was dispatched (time.monotonic()); 0 when this operator did not see it.
    since: float


def to_preempt(
    running: Sequence[RunningTraining],
    preempting: Collection[str],
    jobs_waiting: int,
    free_slots: int,
) -> list[RunningTraining]:
    missing = jobs_waiting - free_slots - len(preempting)
    if missing <= 0:
        return []
    candidates = [training for training in running if training.uid not in preempting]
    candidates.sort(key=lambda training: (training.since, training.uid), reverse=True)
    return candidates[:missing]
