"""A GPUPool's status from what its controller counts: a pure function of the status
stored before, so that an unchanged pool yields an equal status (and no write)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffleet_core.resources.conditions import ConditionStatus

READY = "Ready"
SCALING = "Scaling"


@dataclass(frozen=True)
class PoolCounts:
    replicas: int  # pods that count (not finished, not being deleted)
    ready: int  # of them, those whose worker has announced itself (its Lease)
    busy: int  # of them, those running jobs
    desired: int
    queued_jobs: int


def pool_status(
    previous: Mapping[str, Any],
    counts: PoolCounts,
    *,
    generation: int,
    scale_down_delay: int,
    scaled_at: str | None,
    now: str,
) -> dict[str, Any]:
    """The status to store (camelCase). `scaled_at`: when pods were last created or
    deleted, None to keep the stored lastScaleTime; `now` is the timestamp of a
    condition that changes."""
    conditions = [
        _condition(previous, READY, now, *_readiness(counts)),
        _condition(previous, SCALING, now, *_scaling(counts, scale_down_delay)),
    ]
    status: dict[str, Any] = {
        "replicas": counts.replicas,
        "readyReplicas": counts.ready,
        "busyReplicas": counts.busy,
        "desiredReplicas": counts.desired,
        "queuedJobs": counts.queued_jobs,
        "conditions": conditions,
        "observedGeneration": generation,
    }
    last_scale_time = scaled_at or previous.get("lastScaleTime")
    if last_scale_time:
        status["lastScaleTime"] = last_scale_time
    return status


def _readiness(counts: PoolCounts) -> tuple[bool, str, str]:
    message = f"{counts.ready} of {counts.desired} desired workers ready"
    if counts.ready >= counts.desired:
        return True, "WorkersReady", message
    return False, "WorkersStarting", message


def _scaling(counts: PoolCounts, scale_down_delay: int) -> tuple[bool, str, str]:
    if counts.replicas < counts.desired:
        return True, "ScalingUp", f"{counts.replicas} of {counts.desired} workers"
    if counts.replicas > counts.desired:
        return (
            True,
            "ScalingDown",
            f"{counts.replicas - counts.desired} worker(s) above {counts.desired}, removed"
            f" once idle for {scale_down_delay}s",
        )
    return False, "AtDesiredReplicas", f"{counts.replicas} workers"


def _condition(
    previous: Mapping[str, Any], kind: str, now: str, true: bool, reason: str, message: str
) -> dict[str, Any]:
    """The condition, its lastTransitionTime kept while its status stays the same."""
    status = ConditionStatus.TRUE if true else ConditionStatus.FALSE
    stored: Mapping[str, Any] = next(
        (c for c in previous.get("conditions") or [] if c.get("type") == kind), {}
    )
    since = stored.get("lastTransitionTime") if stored.get("status") == status else None
    return {
        "type": kind,
        "status": str(status),
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now,
    }
