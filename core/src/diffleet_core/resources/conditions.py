"""Kubernetes-style status conditions and the reasons diffleet writes into them."""

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from diffleet_core.resources.base import StatusModel


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Machine-readable reasons (CamelCase, per the API conventions) of conditions and failures."""

    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_NOT_READY = "ModelNotReady"
    ADMITTED = "Admitted"
    DISPATCHED = "Dispatched"
    POOL_AT_MAX_REPLICAS = "PoolAtMaxReplicas"
    STARTED = "Started"
    SUCCEEDED = "Succeeded"
    WORKER_LOST = "WorkerLost"
    TIMEOUT = "Timeout"
    CANCELLED = "Cancelled"
    FAILED = "Failed"
    OUT_OF_MEMORY = "OutOfMemory"
    INVALID_SPEC = "InvalidSpec"
    INCOMPATIBLE_MODELS = "IncompatibleModels"
    VERIFIED = "Verified"
    DIGEST_MISMATCH = "DigestMismatch"
    SOURCE_NOT_FOUND = "SourceNotFound"
    UNSAFE_FORMAT = "UnsafeFormat"
    # Moderation: a prompt matching the namespace's deny-list (at admission), an output
    # the safety classifier flagged (at the worker, before any upload).
    PROMPT_REJECTED = "PromptRejected"
    CONTENT_REJECTED = "ContentRejected"
    # Trainings: stopped at a step boundary for inference (it resumes from its checkpoint);
    # the LoRA written and its ModelCache being verified.
    PREEMPTED = "Preempted"
    REGISTERING = "Registering"


class Condition(StatusModel):
    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)
