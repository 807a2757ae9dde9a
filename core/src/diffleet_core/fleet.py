"""How a worker announces itself: a coordination.k8s.io Lease named after it.

The Lease is renewed every few seconds (liveness); its labels say which pool it serves
and its annotation `diffleet.io/inventory` holds a `WorkerInventory` as JSON: what the
operator needs to place work on it. The operator watches these Leases as the fleet.
"""

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

WORKER_LABEL = "diffleet.io/worker"
POOL_LABEL = "diffleet.io/pool"
INVENTORY_ANNOTATION = "diffleet.io/inventory"

# Worker pods: the GPUPool that owns a pod, and the label every pod of diffleet's own
# carries (the local stack's pod runner, hack/, runs exactly the pods that have it).
GPUPOOL_LABEL = "diffleet.io/gpupool"
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "diffleet"
# Node consolidation (Karpenter) never evicts a pod that carries it: set on busy workers.
DO_NOT_DISRUPT_ANNOTATION = "karpenter.sh/do-not-disrupt"


class WorkerInventory(BaseModel):
    """A worker's capacity and what it holds, as the operator places by it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    worker_id: str
    pool: str
    gpu_type: str = ""
    node: str = ""
    vram_gib: float = Field(ge=0, alias="vramGiB")
    concurrency: int = Field(default=1, ge=1)
    hot_models: list[str] = Field(
        default_factory=list, description="digests resident on GPU, least recently used first"
    )
    warm_models: list[str] = Field(default_factory=list, description="digests on local disk")
    jobs_in_flight: list[str] = Field(default_factory=list, description="job uids running")
    draining: bool = False
    # How many checkpoints the hot tier holds (the planner predicts evictions by it);
    # None: unbounded or unknown.
    hot_slots: int | None = Field(default=None, ge=1)
