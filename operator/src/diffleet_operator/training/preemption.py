"""Which trainings give their slot back to inference (pure).

Trainings run below every inference tier. Each waiting inference job, in order, takes a
free slot of a worker that may run it (diffleet_operator.scheduler.eligibility); else a
slot on its way (a training already told to stop, on such a worker); else the training
dispatched last among those running on such a worker is preempted (it loses the least
work). A job that no training's worker may run preempts nothing: it waits for the
autoscaler, not for a training."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.scheduler.eligibility import PoolCatalog, Requirements, worker_fits


@dataclass(frozen=True)
class RunningTraining:
    uid: str
    worker: str
    attempt: int
    # When it was dispatched (time.monotonic()); 0 when this operator did not see it.
    since: float


def to_preempt(
    running: Sequence[RunningTraining],
    preempting: Collection[str],
    waiting: Sequence[Requirements],
    fleet: Sequence[WorkerView],
    pools: PoolCatalog,
) -> list[RunningTraining]:
    workers = {worker.worker_id: worker for worker in fleet}
    free = {worker.worker_id: worker.free_slots for worker in fleet}
    coming = [training for training in running if training.uid in preempting]
    candidates = sorted(
        (training for training in running if training.uid not in preempting),
        key=lambda training: (training.since, training.uid),
        reverse=True,
    )
    chosen: list[RunningTraining] = []
    for needs in waiting:

        def fits(worker_id: str, needs: Requirements = needs) -> bool:
            worker = workers.get(worker_id)
            return worker is not None and worker_fits(worker, needs, pools)

        slot = next((worker for worker, n in free.items() if n > 0 and fits(worker)), None)
        if slot is not None:
            free[slot] -= 1
            continue
        stopping = next((training for training in coming if fits(training.worker)), None)
        if stopping is not None:
            coming.remove(stopping)
            continue
        victim = next((training for training in candidates if fits(training.worker)), None)
        if victim is not None:
            candidates.remove(victim)
            chosen.append(victim)
    return chosen


def wanted_by_inference(
    waiting: Sequence[Requirements], fleet: Sequence[WorkerView], pools: PoolCatalog
) -> set[str]:
    """The workers some waiting inference job may run on: no training is placed there."""
    return {
        worker.worker_id
        for worker in fleet
        if any(worker_fits(worker, needs, pools) for needs in waiting)
    }
