"""Placement: which worker runs a job. A pure function of the job's requirements and a
fleet snapshot, so it is tested table-driven without a cluster.

In order: the pool must be allowed (tier policy, the model's pools, spec.gpuClass) and
have the VRAM; then a worker with the model hot in VRAM, else warm on local disk, else
the least loaded; never a worker without a free slot.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from diffleet_core.resources.generation_job import ANY_GPU_CLASS
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.queue.admission import ResolvedModel


class Outcome(StrEnum):
    HOT = "hot"
    WARM = "warm"
    COLD = "cold"
    NO_CAPACITY = "no_capacity"
    NO_ELIGIBLE_WORKER = "no_eligible_worker"


@dataclass(frozen=True)
class Requirements:
    model_digest: str
    vram_gib: float
    pools: frozenset[str]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    worker: WorkerView | None = None

    @property
    def placed(self) -> bool:
        return self.worker is not None


def requirements(
    model: ResolvedModel, allowed: Iterable[str], gpu_class: str = ANY_GPU_CLASS
) -> Requirements:
    """What a worker must offer to run `model`: a pool among `allowed` (a job's: its tier's
    pools; pre-warming's: every pool) that the model's spec.pools names, when it names any,
    and the job's spec.gpuClass, unless any; and the model's VRAM."""
    pools = set(allowed)
    if model.spec.pools:
        pools &= set(model.spec.pools)
    if gpu_class != ANY_GPU_CLASS:
        pools &= {gpu_class}
    return Requirements(
        model_digest=model.ref.digest, vram_gib=model.spec.vram_gib, pools=frozenset(pools)
    )


def eligible(worker: WorkerView, needs: Requirements) -> bool:
    return not worker.draining and worker.pool in needs.pools and worker.vram_gib >= needs.vram_gib


def place(needs: Requirements, fleet: list[WorkerView]) -> Decision:
    candidates = [worker for worker in fleet if eligible(worker, needs)]
    if not candidates:
        return Decision(Outcome.NO_ELIGIBLE_WORKER)
    free = [worker for worker in candidates if worker.free_slots > 0]
    if not free:
        return Decision(Outcome.NO_CAPACITY)
    hot = [worker for worker in free if needs.model_digest in worker.hot_models]
    if hot:
        return Decision(Outcome.HOT, min(hot, key=least_loaded))
    warm = [worker for worker in free if needs.model_digest in worker.warm_models]
    if warm:
        return Decision(Outcome.WARM, min(warm, key=least_loaded))
    return Decision(Outcome.COLD, min(free, key=least_loaded))


def least_loaded(worker: WorkerView) -> tuple[float, str]:
    """Sort key: the share of its slots a worker uses, then its id (a stable order)."""
    return (worker.load / worker.concurrency, worker.worker_id)
