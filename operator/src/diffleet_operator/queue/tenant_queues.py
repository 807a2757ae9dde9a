"""The tenant queues (diffleet_core.queues: one per tier and job namespace): declared on
first use, by admission and by requeue, and consumed by the dispatch buffers from the
moment they receive, each queue in a prefetch window of its own on one shared channel.

The dispatcher consumes the tenant queues of every namespace it serves that has work:
those admission or requeue declare while it runs, and, after a restart, those of the
Queued jobs of the job cache (`follow`, from the housekeeping sweep). It also drains the
per-tier queues of releases before tenant queues, where an older operator may have left
messages: each message names its job's namespace, so fair share applies to them too.
"""

from collections.abc import Callable, Iterable

from diffleet_core.broker import Broker, Consumer, Handler
from diffleet_core.resources.generation_job import Tier
from diffleet_operator.cache.jobs import TrackedJob

Receiver = Callable[[Tier], Handler]


class TenantQueues:
    def __init__(self, broker: Broker, prefetch: int) -> None:
        self._broker = broker
        self._prefetch = prefetch
        # Tenant queue name -> its tier, for every queue declared here.
        self._declared: dict[str, Tier] = {}
        self._consumed: set[str] = set()
        self._consumer: Consumer | None = None
        self._receiver: Receiver | None = None

    @property
    def declared(self) -> dict[str, Tier]:
        """The tenant queues declared so far, with their tiers."""
        return dict(self._declared)

    async def declare(self, tier: Tier, namespace: str) -> str:
        """The namespace's queue at this tier, declared (once) and consumed once receiving."""
        name = self._broker.topology.tenant_queue(tier, namespace)
        if name not in self._declared:
            await self._broker.declare_queue(name)
            self._declared[name] = tier
        await self._consume(name, tier)
        return name

    async def follow(self, jobs: Iterable[TrackedJob]) -> None:
        """Declares and consumes the queues these jobs wait (or may be requeued) in: those
        of the unfinished jobs that have a tier. Cheap for queues already followed."""
        queues = {
            (job.status.tier, job.namespace)
            for job in jobs
            if job.status.tier is not None and job.active
        }
        for tier, namespace in queues:
            await self.declare(tier, namespace)

    async def receive(self, receiver: Receiver) -> None:
        """Starts consuming, with `receiver(tier)` handling the messages of that tier: the
        per-tier queues of releases before (drained), every tenant queue declared so far,
        and from now on each one declared."""
        self._consumer = await self._broker.consumer(self._prefetch)
        self._receiver = receiver
        for tier, name in self._broker.topology.tier_queues().items():
            await self._consume(name, tier)
        for name, tier in list(self._declared.items()):
            await self._consume(name, tier)

    async def _consume(self, name: str, tier: Tier) -> None:
        if self._consumer is None or self._receiver is None or name in self._consumed:
            return
        # Claimed before the await: a second declare meanwhile must not consume it twice.
        self._consumed.add(name)
        try:
            await self._consumer.consume(name, self._receiver(tier))
        except BaseException:
            self._consumed.discard(name)
            raise
