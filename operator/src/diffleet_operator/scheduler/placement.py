"""Placement: which worker runs a job. A pure function of the job's requirements, a
fleet snapshot and the GPUPools, so it is tested table-driven without a cluster.

In order: the worker may run the job (diffleet_operator.scheduler.eligibility: pool
identity, tiers, the model's pools, VRAM) and has a free slot; then the one with the
model hot in VRAM, else warm on local disk, else the least loaded. The autoscaler ranks
pools by the same order (`preference`).
"""

from dataclasses import dataclass
from enum import StrEnum

from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.scheduler.eligibility import PoolCatalog, Requirements, worker_fits


class Outcome(StrEnum):
    HOT = "hot"
    WARM = "warm"
    COLD = "cold"
    NO_CAPACITY = "no_capacity"
    NO_ELIGIBLE_WORKER = "no_eligible_worker"


# What placing on a worker of each `preference` rank is.
RANKED = (Outcome.HOT, Outcome.WARM, Outcome.COLD)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    worker: WorkerView | None = None

    @property
    def placed(self) -> bool:
        return self.worker is not None


def place(needs: Requirements, fleet: list[WorkerView], pools: PoolCatalog) -> Decision:
    candidates = [worker for worker in fleet if worker_fits(worker, needs, pools)]
    if not candidates:
        return Decision(Outcome.NO_ELIGIBLE_WORKER)
    free = [worker for worker in candidates if worker.free_slots > 0]
    if not free:
        return Decision(Outcome.NO_CAPACITY)
    best = min(free, key=lambda worker: preference(worker, needs.model_digest))
    return Decision(RANKED[preference(best, needs.model_digest)[0]], best)


def preference(worker: WorkerView, model_digest: str) -> tuple[int, float, str]:
    """Sort key of placement order: the model hot (0), warm (1), neither (2); then the
    least loaded."""
    if model_digest in worker.hot_models:
        rank = 0
    elif model_digest in worker.warm_models:
        rank = 1
    else:
        rank = 2
    return (rank, *least_loaded(worker))


def least_loaded(worker: WorkerView) -> tuple[float, str]:
    """Sort key: the share of its slots a worker uses, then its id (a stable order)."""
    return (worker.load / worker.concurrency, worker.worker_id)
