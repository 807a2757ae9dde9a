"""kopf handlers, one module per watched resource. Importing this package registers them."""

from diffleet_operator.handlers import (
    generation_jobs,
    gpu_pools,
    leases,
    model_caches,
    training_jobs,
)

__all__ = ["generation_jobs", "gpu_pools", "leases", "model_caches", "training_jobs"]
