"""Which pools and workers may run a job: pool identity, shared by placement (which
worker now) and the autoscaler (which pool to grow).

A job's spec.gpuClass is `any` or a GPU type, matched against a GPUPool's spec.gpuType
and the type a worker announces (a worker that announces none has its pool's name as its
type). A job may run on a pool of its type whose tiers allow it (spec.tiers empty: every
tier), whose VRAM fits its models and a video's frames (JobModels.in_gpu_memory) and
which its primary model's spec.pools names, when it names any. Workers whose pool has no
GPUPool (started by hand, as tests and benchmarks do) are open to every tier; a pool being
deleted gets no new jobs.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from diffleet_core.resources.generation_job import ANY_GPU_CLASS, Tier
from diffleet_core.resources.gpu_pool import GPUPoolSpec
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.queue.admission import JobModels, ResolvedModel


class PoolCatalog(Protocol):
    """The GPUPools as last seen (diffleet_operator.cache.pools.PoolIndex)."""

    def get(self, name: str) -> GPUPoolSpec | None: ...

    def specs(self) -> Mapping[str, GPUPoolSpec]: ...

    def deleting(self, name: str) -> bool: ...


@dataclass(frozen=True)
class Requirements:
    """What a job needs of the pool and the worker that run it."""

    model_digest: str
    vram_gib: float
    # None: any tier (pre-warming asks where a model could run for anyone).
    tier: Tier | None = None
    gpu_class: str = ANY_GPU_CLASS
    # The model's spec.pools; None: any pool.
    model_pools: frozenset[str] | None = None

    def allows_type(self, gpu_type: str) -> bool:
        return self.gpu_class == ANY_GPU_CLASS or self.gpu_class == gpu_type

    def allows_pool(self, name: str, pool: GPUPoolSpec | None) -> bool:
        """The tier and the model allow the pool (`pool`: its GPUPool, None if it has none)."""
        if self.model_pools is not None and name not in self.model_pools:
            return False
        return pool is None or self.tier is None or pool.allows(self.tier)


def pool_fits(name: str, pool: GPUPoolSpec, needs: Requirements) -> bool:
    """A worker of this GPUPool could run the job (by the pool's spec: it may have none)."""
    return (
        needs.allows_pool(name, pool)
        and needs.allows_type(pool.gpu_type)
        and pool.vram_gib >= needs.vram_gib
    )


def worker_fits(worker: WorkerView, needs: Requirements, pools: PoolCatalog) -> bool:
    """The worker may be given the job (free slots aside)."""
    return (
        not worker.draining
        and not pools.deleting(worker.pool)
        and needs.allows_pool(worker.pool, pools.get(worker.pool))
        and needs.allows_type(worker.gpu_type)
        and worker.vram_gib >= needs.vram_gib
    )


def requirements(
    model: ResolvedModel, tier: Tier | None = None, gpu_class: str = ANY_GPU_CLASS
) -> Requirements:
    """What running `model` needs: for a job, of its tier and spec.gpuClass; for
    pre-warming, of any tier and type."""
    return Requirements(
        model_digest=model.ref.digest,
        vram_gib=model.spec.vram_gib,
        tier=tier,
        gpu_class=gpu_class,
        model_pools=frozenset(model.spec.pools) if model.spec.pools else None,
    )


def job_requirements(models: JobModels, tier: Tier, gpu_class: str) -> Requirements:
    """What running a job needs: its primary model's placement (digest, pools), and the
    VRAM of every model it holds in GPU memory plus its frames' activations (a video's)."""
    vram = sum(model.spec.vram_gib for model in models.in_gpu_memory) + models.activation_gib
    return dataclasses.replace(requirements(models.model, tier, gpu_class), vram_gib=vram)
