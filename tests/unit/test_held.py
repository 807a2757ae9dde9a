"""Held admissions: each attempt's Queued fields are in one place at a time, and whoever
takes them (the dispatcher by claiming, the admitter for a job that waits) writes them."""

import time
from dataclasses import replace

from diffleet_core.resources.generation_job import Tier
from diffleet_operator import status
from diffleet_operator.queue.held import Admission, HeldAdmissions


def admission(uid: str, attempt: int = 1, held_since: float | None = None) -> Admission:
    held = Admission(uid, attempt, Tier.FREE, "diffleet.jobs.free", 7, status.now())
    return held if held_since is None else replace(held, held_since=held_since)


def test_a_claim_takes_the_admission_once() -> None:
    held = HeldAdmissions()
    held.hold(admission("a"))
    assert held.holds("a", 1)
    claimed = held.claim("a", 1)
    assert claimed is not None
    assert claimed.uid == "a"
    assert not held.holds("a", 1)
    assert held.claim("a", 1) is None


def test_a_claim_for_another_attempt_takes_nothing() -> None:
    held = HeldAdmissions()
    held.hold(admission("a", attempt=2))
    assert held.claim("a", 1) is None
    assert held.holds("a", 2)


def test_dropped_admissions_are_never_written() -> None:
    held = HeldAdmissions()
    held.hold(admission("a"))
    held.drop("a")
    assert held.claim_all() == []


def test_only_overdue_admissions_are_taken_by_age() -> None:
    held = HeldAdmissions()
    now = time.monotonic()
    held.hold(admission("old", held_since=now - 10))
    held.hold(admission("new", held_since=now))
    assert [a.uid for a in held.claim_older_than(5)] == ["old"]
    assert held.holds("new", 1)
    assert not held.holds("old", 1)
    assert [a.uid for a in held.claim_all()] == ["new"]
    assert held.claim_all() == []


def test_summary_names_the_queue_and_tier() -> None:
    assert admission("a").summary == "queued in diffleet.jobs.free (tier free)"
