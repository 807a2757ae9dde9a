"""The job cache's index of Queued jobs, which the autoscaler counts as waiting: jobs beyond
the dispatcher's prefetch window and jobs waiting out a requeue's backoff."""

from diffleet_operator.cache.jobs import JobCache
from tests.unit.test_quarantine import job


def queued(cache: JobCache) -> set[str]:
    return {tracked.uid for tracked in cache.queued()}


def test_a_job_is_queued_while_its_status_says_so() -> None:
    cache = JobCache()
    cache.observe(job("a", {}))
    assert queued(cache) == set()
    cache.observe(job("a", {}, {"phase": "Queued", "tier": "free", "attempts": 1}))
    assert queued(cache) == {"uid-a"}
    cache.observe(job("a", {}, {"phase": "Scheduled", "attempts": 2}))
    assert queued(cache) == set()


def test_cancelled_and_removed_jobs_leave_the_index() -> None:
    cache = JobCache()
    cache.observe(job("a", {}, {"phase": "Queued", "tier": "free"}))
    cache.observe(job("b", {}, {"phase": "Queued", "tier": "free"}))
    cache.observe(job("a", {"cancel": True}, {"phase": "Queued", "tier": "free"}))
    cache.remove("uid-b")
    assert queued(cache) == set()
