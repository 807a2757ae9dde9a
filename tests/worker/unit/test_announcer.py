"""The Lease's renewals: a heartbeat, and at once when what placement reads changes."""

import asyncio

from diffleet_core.fleet import WorkerInventory
from diffleet_worker.announcer import Announcer


class CountingAnnouncer(Announcer):
    def __init__(self) -> None:
        self.sent: list[WorkerInventory] = []

    async def announce(self, inventory: WorkerInventory) -> None:
        self.sent.append(inventory)


def inventory(hot: list[str], jobs: list[str]) -> WorkerInventory:
    return WorkerInventory(
        worker_id="w", pool="t4", vram_gib=16, hot_models=hot, jobs_in_flight=jobs
    )


def test_jobs_alone_wait_for_the_heartbeat_and_a_model_change_does_not() -> None:
    asyncio.run(changes())


async def changes() -> None:
    announcer = CountingAnnouncer()
    current = inventory(["a"], [])
    keeping = asyncio.create_task(
        announcer.keep(lambda: current, every=60, renewed=lambda _: None, check_every=0.01)
    )
    await asyncio.sleep(0.1)
    assert len(announcer.sent) == 1  # the first announcement, at once

    current = inventory(["a"], ["job-1"])  # a job started: nothing placement reads
    await asyncio.sleep(0.1)
    assert len(announcer.sent) == 1

    current = inventory(["b", "a"], ["job-1"])  # a model loaded: announced within a check
    await asyncio.sleep(0.1)
    assert [sent.hot_models for sent in announcer.sent] == [["a"], ["b", "a"]]

    current = inventory(["a", "b"], [])  # only the recency order moved
    await asyncio.sleep(0.1)
    assert len(announcer.sent) == 2
    keeping.cancel()


def test_the_heartbeat_renews_an_unchanged_lease() -> None:
    asyncio.run(heartbeats())


async def heartbeats() -> None:
    announcer = CountingAnnouncer()
    keeping = asyncio.create_task(
        announcer.keep(
            lambda: inventory([], []), every=0.05, renewed=lambda _: None, check_every=0.01
        )
    )
    await asyncio.sleep(0.5)
    keeping.cancel()
    # One period is 0.9 to 1.0 of 0.05 s (the first a random part of one): 8 to 11 in 0.5 s.
    assert 6 <= len(announcer.sent) <= 12
