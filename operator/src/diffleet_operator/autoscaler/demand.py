"""Demand: which pool each waiting job waits for, and how many of them should make it grow.

Each waiting job is assigned to exactly one pool. Its candidates, best first: the pools
whose live workers may take it, in placement order of their best worker (model hot, then
warm, then least loaded: diffleet_operator.scheduler.placement); then, to activate, the
other GPUPools that fit it, smallest vramGiB first, then by name. It waits for the first
candidate with room (a GPUPool: maxReplicas x targetJobsPerWorker; a pool without one:
its workers' slots; less what runs and waits there already), else for its first.

Model-aware: jobs for a model that a pool's hot workers drain before a new worker could
start and load it do not count; only the excess does.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.scheduler.eligibility import (
    PoolCatalog,
    Requirements,
    pool_fits,
    worker_fits,
)
from diffleet_operator.scheduler.placement import preference

# A run is never taken to be shorter (a zero-length sample would mean an endless drain).
MIN_RUN_SECONDS = 0.01


@dataclass(frozen=True)
class WaitingJob:
    uid: str
    needs: Requirements


@dataclass(frozen=True)
class Estimates:
    """How long things take, observed or from the operator's settings."""

    worker_start_seconds: float
    default_run_seconds: float
    default_load_seconds: float
    # Per model digest.
    run_seconds: Mapping[str, float] = field(default_factory=dict)
    load_seconds: Mapping[str, float] = field(default_factory=dict)

    def run(self, digest: str) -> float:
        return max(self.run_seconds.get(digest, self.default_run_seconds), MIN_RUN_SECONDS)

    def cold_start(self, digest: str) -> float:
        """From deciding a new worker to its first run of the model: start, announce, load."""
        return self.worker_start_seconds + self.load_seconds.get(digest, self.default_load_seconds)


def candidates(needs: Requirements, fleet: Sequence[WorkerView], pools: PoolCatalog) -> list[str]:
    """The pools that could run the job, best first (see the module's docstring)."""
    best: dict[str, tuple[int, float, str]] = {}
    for worker in fleet:
        if worker_fits(worker, needs, pools):
            key = preference(worker, needs.model_digest)
            best[worker.pool] = min(key, best.get(worker.pool, key))
    live = sorted(best, key=best.__getitem__)
    idle = sorted(
        (spec.vram_gib, name)
        for name, spec in pools.specs().items()
        if name not in best and not pools.deleting(name) and pool_fits(name, spec, needs)
    )
    return live + [name for _, name in idle]


def running_per_pool(fleet: Sequence[WorkerView]) -> Counter[str]:
    """Jobs in flight (or just dispatched) on each pool's live workers."""
    running: Counter[str] = Counter()
    for worker in fleet:
        running[worker.pool] += worker.load
    return running


def assign(
    waiting: Sequence[WaitingJob], fleet: Sequence[WorkerView], pools: PoolCatalog
) -> dict[str, list[WaitingJob]]:
    """The waiting jobs per pool each waits for; a job no pool fits is in none."""
    room = _room(fleet, pools)
    assigned: defaultdict[str, list[WaitingJob]] = defaultdict(list)
    # Jobs of one burst mostly need the same: their candidates are found once.
    known: dict[Requirements, list[str]] = {}
    for job in waiting:
        choices = known.get(job.needs)
        if choices is None:
            choices = known[job.needs] = candidates(job.needs, fleet, pools)
        if not choices:
            continue
        pool = next((name for name in choices if room.get(name, 0) > 0), choices[0])
        room[pool] = room.get(pool, 0) - 1
        assigned[pool].append(job)
    return dict(assigned)


def _room(fleet: Sequence[WorkerView], pools: PoolCatalog) -> dict[str, int]:
    running = running_per_pool(fleet)
    room: dict[str, int] = {}
    for worker in fleet:
        if pools.get(worker.pool) is None and not worker.draining:
            room[worker.pool] = room.get(worker.pool, 0) + worker.concurrency
    for name, spec in pools.specs().items():
        if not pools.deleting(name):
            room[name] = spec.max_replicas * spec.target_jobs_per_worker
    return {name: slots - running[name] for name, slots in room.items()}


def counted(
    pool: str, jobs: Sequence[WaitingJob], fleet: Sequence[WorkerView], estimates: Estimates
) -> int:
    """How many of the jobs waiting for `pool` should make it grow: per model, those its
    hot workers cannot drain within the cold start of a new worker."""
    per_model = Counter(job.needs.model_digest for job in jobs)
    total = 0
    for digest, queued in per_model.items():
        hot_slots = sum(
            worker.concurrency
            for worker in fleet
            if worker.pool == pool and not worker.draining and digest in worker.hot_models
        )
        drained = math.floor(hot_slots * estimates.cold_start(digest) / estimates.run(digest))
        total += max(queued - drained, 0)
    return total
