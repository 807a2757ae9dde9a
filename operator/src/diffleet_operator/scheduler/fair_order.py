"""The order the dispatcher considers buffered jobs in: tiers by their shares
(queue.tier_shares), then within a tier namespaces by theirs (queue.tenant_shares),
leaving out the jobs a namespace has no room for under its limit of jobs running at once.

A namespace's policy comes from its annotations, read like its tier label (admission
reads them for each job it publishes) and again in the background at most every
NAMESPACE_MAX_AGE_SECONDS; a namespace whose annotations were never read (after a
restart) is skipped until they are. Running jobs are those in flight on the fleet
(dispatched, not finished), counted only when a namespace waiting has a limit.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from diffleet_core.resources.generation_job import Tier
from diffleet_operator.kube import NAMESPACE_MAX_AGE_SECONDS, Kube
from diffleet_operator.quarantine import describe
from diffleet_operator.queue.tenant_shares import TenantPolicy, TenantShares
from diffleet_operator.queue.tier_shares import TierShares
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.buffer import Buffered, TierBuffers

logger = logging.getLogger(__name__)


class NamespacePolicies:
    """Each namespace's TenantPolicy from its annotations as Kube last read them (admission
    reads them for every job it publishes), read again in the background when older than
    NAMESPACE_MAX_AGE_SECONDS; `read` is called after each read (the dispatcher wakes: a
    namespace may have become eligible)."""

    def __init__(self, kube: Kube, read: Callable[[], None]) -> None:
        self._kube = kube
        self._on_read = read
        self._reading: dict[str, asyncio.Task[None]] = {}

    def get(self, namespace: str) -> TenantPolicy | None:
        """The policy as last read (None: never read yet); starts a read when due."""
        cached = self._kube.cached_namespace_annotations(namespace)
        due = cached is None or cached[0] > NAMESPACE_MAX_AGE_SECONDS
        if due and namespace not in self._reading:
            task = asyncio.create_task(self._read(namespace))
            self._reading[namespace] = task
            task.add_done_callback(lambda _: self._reading.pop(namespace, None))
        return None if cached is None else TenantPolicy.of(cached[1])

    def weight(self, namespace: str) -> int:
        policy = self.get(namespace)
        return policy.weight if policy else 1

    async def _read(self, namespace: str) -> None:
        try:
            await self._kube.namespace_annotations(namespace)
        except Exception as error:  # noqa: BLE001 - the last policy read stays until the next
            logger.warning("namespace %s: annotations not read: %s", namespace, describe(error))
            return
        self._on_read()


class FairOrder:
    """`wake` is called when a namespace's policy has been read."""

    def __init__(self, rt: Runtime, wake: Callable[[], None]) -> None:
        self.rt = rt
        self.tiers = TierShares(rt.operator.tier_weights)
        self.tenants = TenantShares()
        self.policies = NamespacePolicies(rt.kube, wake)

    def order(self, buffers: TierBuffers) -> list[tuple[Tier, Buffered]]:
        """The buffered entries in fair order, without those of namespaces at their limit."""
        waiting = buffers.waiting()
        by_tier = {
            tier: [(entry.admitted.job.namespace, entry) for entry in buffers.by_tier[tier]]
            for tier in waiting
        }
        namespaces = {namespace for entries in by_tier.values() for namespace, _ in entries}
        policies = {
            namespace: policy
            for namespace in namespaces
            if (policy := self.policies.get(namespace)) is not None
        }
        limited = any(policy.max_running is not None for policy in policies.values())
        running = self._running() if limited else Counter[str]()
        return [
            (tier, entry)
            for tier in self.tiers.order(waiting)
            for entry in self.tenants.order(tier, by_tier[tier], policies, running)
        ]

    def due(self, window: list[tuple[Tier, Buffered]]) -> frozenset[str]:
        """The uids of the jobs served in order whatever placement prefers: in the window
        (in fair order), the first of each namespace that has fallen behind its share."""
        first: dict[tuple[Tier, str], str] = {}
        for tier, entry in window:
            first.setdefault((tier, entry.admitted.job.namespace), entry.admitted.job.uid)
        return frozenset(
            uid for (tier, namespace), uid in first.items() if self.tenants.behind(tier, namespace)
        )

    def spend(self, tier: Tier, entry: Buffered) -> None:
        namespace = entry.admitted.job.namespace
        self.tiers.spend(tier)
        self.tenants.spend(tier, namespace, self.policies.weight(namespace))

    def at_limit(self, namespace: str) -> bool:
        """The namespace runs as many jobs as its limit allows (none: never)."""
        policy = self.policies.get(namespace)
        if policy is None or policy.max_running is None:
            return False  # the running jobs are counted only where a limit needs them
        return policy.at_limit(self._running()[namespace])

    def _running(self) -> Counter[str]:
        """Jobs in flight per namespace: on a worker's Lease, or dispatched and assumed."""
        running = Counter[str]()
        for worker in self.rt.fleet.snapshot():
            for uid in worker.jobs:
                if job := self.rt.jobs.get(uid):
                    running[job.namespace] += 1
        return running
