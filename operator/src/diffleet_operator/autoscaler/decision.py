"""The decision: how many workers each GPUPool should have, a pure function of plain
inputs (the pools, the waiting jobs with their requirements, the live workers with their
load and hot models, timing estimates), so it is tested table-driven.

Desired replicas = ceil((jobs that wait for the pool and count + jobs running there) /
targetJobsPerWorker), within [minReplicas, maxReplicas]: one step to the target on a
burst, none on a queue its hot workers drain first (diffleet_operator.autoscaler.demand).
A pool being deleted gets no waiting jobs and keeps no minimum.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from diffleet_operator.autoscaler.demand import (
    Estimates,
    WaitingJob,
    assign,
    counted,
    running_per_pool,
)
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.scheduler.eligibility import PoolCatalog


@dataclass(frozen=True)
class PoolDecision:
    pool: str
    desired_replicas: int
    # Jobs that wait for the pool, and jobs running on its workers.
    queued_jobs: int
    running_jobs: int
    # It has maxReplicas and more jobs than they carry: the jobs that wait for it wait
    # for one of its workers to be free.
    at_max: bool


@dataclass(frozen=True)
class Plan:
    pools: dict[str, PoolDecision]
    # uid -> the GPUPool a waiting job waits for (jobs waiting for a pool without a
    # GPUPool are not here).
    waiting_for: dict[str, str]


def decide(
    pools: PoolCatalog,
    waiting: Sequence[WaitingJob],
    fleet: Sequence[WorkerView],
    estimates: Estimates,
) -> Plan:
    assigned = assign(waiting, fleet, pools)
    running = running_per_pool(fleet)
    decisions: dict[str, PoolDecision] = {}
    waiting_for: dict[str, str] = {}
    for name, spec in pools.specs().items():
        jobs = assigned.get(name, [])
        waiting_for |= {job.uid: name for job in jobs}
        target = spec.target_jobs_per_worker
        need = math.ceil((counted(name, jobs, fleet, estimates) + running[name]) / target)
        floor = 0 if pools.deleting(name) else spec.min_replicas
        desired = min(max(need, floor), spec.max_replicas)
        carried = spec.max_replicas * target
        decisions[name] = PoolDecision(
            pool=name,
            desired_replicas=desired,
            queued_jobs=len(jobs),
            running_jobs=running[name],
            at_max=desired == spec.max_replicas and len(jobs) + running[name] > carried,
        )
    return Plan(decisions, waiting_for)
