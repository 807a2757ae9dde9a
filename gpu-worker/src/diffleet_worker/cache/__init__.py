"""The worker's model cache in three tiers: hot (loaded, in memory), warm (local disk),
cold (S3). See docs/worker-cache.md; ModelStore (store.py) is the entry point. Training
datasets have a disk cache of their own beside the warm tier (DatasetCache, datasets.py)."""

from diffleet_worker.cache.cold import S3Source
from diffleet_worker.cache.datasets import (
    DatasetCache,
    DatasetIdentity,
    DatasetSource,
    DatasetTier,
    ListedObject,
)
from diffleet_worker.cache.errors import CacheTier, ModelCacheError, ModelRefusedError
from diffleet_worker.cache.hot import HotCache
from diffleet_worker.cache.store import CacheStats, Fetched, Loaded, ModelStore
from diffleet_worker.cache.warm import DATASETS, WarmCache

__all__ = [
    "DATASETS",
    "CacheStats",
    "CacheTier",
    "DatasetCache",
    "DatasetIdentity",
    "DatasetSource",
    "DatasetTier",
    "Fetched",
    "HotCache",
    "ListedObject",
    "Loaded",
    "ModelCacheError",
    "ModelRefusedError",
    "ModelStore",
    "S3Source",
    "WarmCache",
]
