"""Admissions whose Queued status is held back, so that a job a worker takes at once needs
one status write (Queued and Scheduled together) instead of two.

Admission publishes the job to its tier queue, then holds its Queued fields here (tier,
queue, seed, queuedAt) instead of writing them. The dispatcher *claims* them when it
places the job and writes them with Scheduled; a job that has to wait has them written
on their own (`Admitter.write_queued`): when no worker can take it, or when it has been
held `queued_status_delay_seconds`. Either way the fields are in exactly one place at a
time, here or on their way to the API server, and whoever removes them writes them.

Like kube-scheduler's assumed bindings, this is memory only. An operator that dies with
admissions held leaves their jobs Pending with messages in their tier queues; the next
one admits them again (a duplicate message of the same attempt is stale once the first is
dispatched) and adopts any that a worker already runs (diffleet_operator.scheduler.adoption).
"""

import time
from dataclasses import dataclass, field
from datetime import datetime

from diffleet_core.resources.generation_job import Tier


@dataclass(frozen=True)
class Admission:
    """What admission decided for one attempt of a job: its Queued status fields."""

    uid: str
    attempt: int
    tier: Tier
    queue: str
    seed: int
    queued_at: datetime
    held_since: float = field(default_factory=time.monotonic)

    @property
    def summary(self) -> str:
        return f"queued in {self.queue} (tier {self.tier})"


class HeldAdmissions:
    """Everything runs on the operator's one event loop: no lock is needed."""

    def __init__(self) -> None:
        self._held: dict[str, Admission] = {}

    def hold(self, admission: Admission) -> None:
        self._held[admission.uid] = admission

    def holds(self, uid: str, attempt: int) -> bool:
        held = self._held.get(uid)
        return held is not None and held.attempt == attempt

    def claim(self, uid: str, attempt: int) -> Admission | None:
        """Takes the held admission of this attempt, if any; the caller writes it."""
        return self._held.pop(uid) if self.holds(uid, attempt) else None

    def drop(self, uid: str) -> None:
        """The job ended (cancelled, deleted): its Queued status is never written."""
        self._held.pop(uid, None)

    def admissions(self) -> list[Admission]:
        """What is held now (read only: the autoscaler counts these jobs as waiting)."""
        return list(self._held.values())

    def claim_older_than(self, seconds: float) -> list[Admission]:
        cutoff = time.monotonic() - seconds
        overdue = [held for held in self._held.values() if held.held_since <= cutoff]
        for held in overdue:
            del self._held[held.uid]
        return overdue

    def claim_all(self) -> list[Admission]:
        held, self._held = list(self._held.values()), {}
        return held
