"""The dispatch buffers: every tenant queue (diffleet_operator.queue.tenant_queues) is
consumed with a prefetch window of its own into an in-memory buffer per tier, so a
namespace with a long queue never fills the window of another. The messages stay
unacknowledged in RabbitMQ until their job is dispatched, so a crash loses nothing and
queue depth keeps meaning "waiting work". Memory is bounded by queues x prefetch."""

import asyncio
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage
from pydantic import TypeAdapter

from diffleet_core.broker import Handler, parse_or_reject
from diffleet_core.messages import AdmittedJob
from diffleet_core.resources.generation_job import Tier
from diffleet_operator.quarantine import Loop, dropped_message
from diffleet_operator.runtime import Runtime

ADMITTED_JOB = TypeAdapter(AdmittedJob)


@dataclass
class Buffered:
    message: AbstractIncomingMessage
    admitted: AdmittedJob


class TierBuffers:
    """The admitted jobs received per tier, in arrival order (each namespace's in its
    queue's order); `wake` is set on each."""

    def __init__(self) -> None:
        self.by_tier: dict[Tier, list[Buffered]] = {tier: [] for tier in Tier}
        self.wake = asyncio.Event()

    async def start(self, rt: Runtime) -> None:
        """Consumes every tenant queue declared from now on, and those of the unfinished
        jobs already in the job cache."""
        await rt.queues.receive(lambda tier: self._receiver(rt, tier))
        await rt.queues.follow(rt.jobs.all())

    def _receiver(self, rt: Runtime, tier: Tier) -> Handler:
        """Buffers the messages of a tier's queues; each is a job that now waits for a
        worker, which the autoscaler hears of (its trigger on admission)."""

        async def receive(message: AbstractIncomingMessage) -> None:
            admitted = await parse_or_reject(message, ADMITTED_JOB)
            if admitted is None:
                dropped_message(Loop.DISPATCH, message.routing_key or "")
                return
            self.by_tier[tier].append(Buffered(message, admitted))
            self.wake.set()
            rt.autoscaler.trigger()

        return receive

    def waiting(self) -> set[Tier]:
        return {tier for tier, buffer in self.by_tier.items() if buffer}

    def remove(self, tier: Tier, entry: Buffered) -> None:
        if entry in self.by_tier[tier]:
            self.by_tier[tier].remove(entry)
