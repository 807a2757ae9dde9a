"""The tenant queues: declared once on first use, consumed once receiving (and those of
releases before tenant queues drained), followed from the job cache after a restart."""

import asyncio
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from diffleet_core.broker import Broker, Handler
from diffleet_core.queues import Topology
from diffleet_core.resources.generation_job import Tier
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.queue.tenant_queues import TenantQueues


class FakeConsumer:
    def __init__(self, consumed: list[str]) -> None:
        self.consumed = consumed

    async def consume(self, queue: str, handler: Handler) -> None:
        self.consumed.append(queue)


class FakeBroker:
    def __init__(self) -> None:
        self.topology = Topology("p")
        self.declared: list[str] = []
        self.consumed: list[str] = []
        self.prefetch: int | None = None

    async def declare_queue(self, queue: str) -> None:
        self.declared.append(queue)

    async def consumer(self, prefetch: int) -> FakeConsumer:
        self.prefetch = prefetch
        return FakeConsumer(self.consumed)


def receiver(tier: Tier) -> Handler:
    async def receive(message: AbstractIncomingMessage) -> None:
        return None

    return receive


def job(namespace: str, phase: str, tier: str | None) -> TrackedJob:
    status: dict[str, Any] = {"phase": phase} | ({"tier": tier} if tier else {})
    return TrackedJob.from_body(
        {
            "metadata": {
                "namespace": namespace,
                "name": "j",
                "uid": f"{namespace}-{phase}",
                "creationTimestamp": "2026-01-01T00:00:00+00:00",
            },
            "spec": {"prompt": "p", "model": "m"},
            "status": status,
        }
    )


def test_a_queue_is_declared_once_and_consumed_once_receiving() -> None:
    broker = FakeBroker()
    queues = TenantQueues(cast(Broker, broker), prefetch=32)

    async def scenario() -> None:
        assert await queues.declare(Tier.PRO, "team-a") == "p.jobs.pro.team-a"
        await queues.declare(Tier.PRO, "team-a")
        assert broker.consumed == []  # not receiving yet
        await queues.receive(receiver)
        await queues.declare(Tier.PRO, "team-a")
        await queues.declare(Tier.FREE, "team-b")

    asyncio.run(scenario())
    assert broker.declared == ["p.jobs.pro.team-a", "p.jobs.free.team-b"]
    legacy = ["p.jobs.enterprise", "p.jobs.pro", "p.jobs.standard", "p.jobs.free"]
    assert broker.consumed == [*legacy, "p.jobs.pro.team-a", "p.jobs.free.team-b"]
    assert broker.prefetch == 32
    assert queues.declared == {"p.jobs.pro.team-a": Tier.PRO, "p.jobs.free.team-b": Tier.FREE}


def test_the_queues_of_unfinished_jobs_with_a_tier_are_followed() -> None:
    broker = FakeBroker()
    queues = TenantQueues(cast(Broker, broker), prefetch=1)
    jobs = [
        job("a", "Queued", "standard"),
        job("a", "Running", "standard"),  # may be requeued there
        job("b", "Running", "pro"),
        job("c", "Pending", None),  # admission declares its queue
        job("d", "Succeeded", "free"),
    ]
    asyncio.run(queues.follow(jobs))
    assert sorted(broker.declared) == ["p.jobs.pro.b", "p.jobs.standard.a"]
