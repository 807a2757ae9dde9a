"""The fleet inventory: every live worker, from the watch on their Leases.

One owner (this class) holds the state; the scheduler reads a `snapshot()` copy. A
dispatch is *assumed* at once (the worker counts as busier) and forgotten when the job
ends, so capacity is right between a dispatch and the worker's next Lease renewal.
Everything runs on the operator's one event loop: a method that does not await is
atomic, so no lock is needed.
"""

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from diffleet_core.fleet import WorkerInventory


@dataclass(frozen=True)
class WorkerView:
    """A worker as placement sees it."""

    inventory: WorkerInventory
    assumed: frozenset[str] = frozenset()

    @property
    def worker_id(self) -> str:
        return self.inventory.worker_id

    @property
    def jobs(self) -> frozenset[str]:
        return frozenset(self.inventory.jobs_in_flight) | self.assumed

    @property
    def load(self) -> int:
        return len(self.jobs)

    @property
    def free_slots(self) -> int:
        return max(self.inventory.concurrency - self.load, 0)


@dataclass
class _Worker:
    inventory: WorkerInventory
    expires_at: datetime
    assumed: set[str] = field(default_factory=set)


class FleetInventory:
    def __init__(self) -> None:
        self._workers: dict[str, _Worker] = {}
        self.changed = asyncio.Event()

    def upsert(self, inventory: WorkerInventory, expires_at: datetime) -> None:
        inventory = _copy(inventory)
        worker = self._workers.get(inventory.worker_id)
        if worker is None:
            self._workers[inventory.worker_id] = _Worker(inventory, expires_at)
        else:
            worker.inventory = inventory
            worker.expires_at = expires_at
            worker.assumed -= set(inventory.jobs_in_flight)
        self.changed.set()

    def remove(self, worker_id: str) -> WorkerView | None:
        worker = self._workers.pop(worker_id, None)
        self.changed.set()
        return None if worker is None else _view(worker)

    def assume(self, worker_id: str, uid: str) -> None:
        if worker := self._workers.get(worker_id):
            worker.assumed.add(uid)

    def holder(self, uid: str) -> str | None:
        """The worker that runs the job or was just given it, if any."""
        for worker in self._workers.values():
            if uid in worker.assumed or uid in worker.inventory.jobs_in_flight:
                return worker.inventory.worker_id
        return None

    def forget(self, uid: str) -> None:
        """The job ended or was requeued: it no longer takes a slot anywhere."""
        for worker in self._workers.values():
            worker.assumed.discard(uid)
            if uid in worker.inventory.jobs_in_flight:
                jobs = [job for job in worker.inventory.jobs_in_flight if job != uid]
                worker.inventory = worker.inventory.model_copy(update={"jobs_in_flight": jobs})
        self.changed.set()

    def expired(self, now: datetime) -> list[WorkerView]:
        """Removes and returns the workers whose Lease ran out."""
        lost = [w for w in self._workers.values() if w.expires_at < now]
        for worker in lost:
            del self._workers[worker.inventory.worker_id]
        if lost:
            self.changed.set()
        return [_view(worker) for worker in lost]

    def snapshot(self) -> list[WorkerView]:
        return [_view(worker) for worker in self._workers.values()]


def _view(worker: _Worker) -> WorkerView:
    return WorkerView(_copy(worker.inventory), frozenset(worker.assumed))


def _copy(inventory: WorkerInventory) -> WorkerInventory:
    """A copy that shares nothing mutable (its lists are new): as good as a deep copy for
    an inventory, at a fraction of the cost (the scheduler copies the fleet every cycle)."""
    return inventory.model_copy(
        update={
            "hot_models": list(inventory.hot_models),
            "warm_models": list(inventory.warm_models),
            "jobs_in_flight": list(inventory.jobs_in_flight),
        }
    )
