"""The cache's tiers and its errors. Each error carries a status reason and whether
another attempt (on this worker or another) could succeed, so the runner can turn it
into a RunFailedError as it is."""

from enum import StrEnum

from diffleet_core.resources.conditions import Reason


class CacheTier(StrEnum):
    """Where a model was found, fastest first: resident in memory, on local disk, in S3.
    The value is the label for logs and metrics (`diffleet_worker_model_loads_total{tier}`)."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


class ModelCacheError(Exception):
    def __init__(self, reason: Reason, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class ModelRefusedError(ModelCacheError):
    """The artifact is in a format that could run code on load (pickle), or names paths
    outside its folder. Refused before anything is downloaded; never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.UNSAFE_FORMAT, message, retryable=False)
