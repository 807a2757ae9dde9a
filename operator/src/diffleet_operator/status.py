"""Status patches of a GenerationJob, one function per transition.

Each returns the merge patch for `status`; conditions are recomputed from the job's
current list (a merge patch replaces lists whole), one condition per type.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from diffleet_core.resources.conditions import Condition, ConditionStatus, Reason
from diffleet_core.resources.generation_job import GenerationJobStatus, JobOutput, JobPhase, Tier
from diffleet_operator.queue.held import Admission

# Condition types of a GenerationJob.
MODEL_READY = "ModelReady"
ADMITTED = "Admitted"
SCHEDULED = "Scheduled"
COMPLETE = "Complete"


def now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def instant(moment: datetime) -> str:
    """A transition's time to the millisecond (scheduledAt, startedAt, completedAt): how
    far the status lags what happened is measured from it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_condition(
    status: GenerationJobStatus,
    generation: int | None,
    kind: str,
    state: ConditionStatus,
    reason: str,
    message: str,
) -> list[dict[str, Any]]:
    """The job's conditions with `kind` set; the transition time moves only on a change."""
    conditions = {c.type: c for c in status.conditions or []}
    previous = conditions.get(kind)
    changed = previous is None or previous.status != state
    conditions[kind] = Condition(
        type=kind,
        status=state,
        reason=reason,
        message=message,
        last_transition_time=now()
        if changed or previous is None
        else previous.last_transition_time,
        observed_generation=generation,
    )
    return [
        c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions.values()
    ]


def pending(
    status: GenerationJobStatus, generation: int | None, reason: Reason, message: str
) -> dict[str, Any]:
    return {
        "phase": JobPhase.PENDING,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "conditions": with_condition(
            status, generation, MODEL_READY, ConditionStatus.FALSE, reason, message
        ),
    }


def queued(
    status: GenerationJobStatus,
    generation: int | None,
    *,
    tier: Tier,
    queue: str,
    seed: int,
    attempt: int,
    queued_at: datetime | None = None,
    reason: str = Reason.ADMITTED,
    message: str = "",
) -> dict[str, Any]:
    return {
        "phase": JobPhase.QUEUED,
        "tier": tier,
        "queue": queue,
        "seed": seed,
        "attempts": attempt,
        "queuedAt": timestamp(queued_at or now()),
        "pool": None,
        "node": None,
        "worker": None,
        "progress": None,
        "reason": reason,
        "message": message or f"waiting in {queue}",
        "observedGeneration": generation,
        "conditions": with_condition(
            status, generation, ADMITTED, ConditionStatus.TRUE, reason, f"admitted to {queue}"
        ),
    }


def scheduled(
    status: GenerationJobStatus, generation: int | None, *, pool: str, node: str, worker: str
) -> dict[str, Any]:
    message = f"dispatched to worker {worker} ({pool})"
    return {
        "phase": JobPhase.SCHEDULED,
        "pool": pool,
        "node": node,
        "worker": worker,
        "scheduledAt": instant(now()),
        "reason": Reason.DISPATCHED,
        "message": message,
        "conditions": with_condition(
            status, generation, SCHEDULED, ConditionStatus.TRUE, Reason.DISPATCHED, message
        ),
    }


def admitted_and_scheduled(
    status: GenerationJobStatus,
    generation: int | None,
    admission: Admission,
    *,
    pool: str,
    node: str,
    worker: str,
) -> dict[str, Any]:
    """Queued and Scheduled in one patch, for a job dispatched while its admission was
    held (diffleet_operator.queue.held): both conditions, Scheduled's phase and message."""
    first = queued(
        status,
        generation,
        tier=admission.tier,
        queue=admission.queue,
        seed=admission.seed,
        attempt=admission.attempt,
        queued_at=admission.queued_at,
    )
    conditions = [Condition.model_validate(c) for c in first["conditions"]]
    admitted = status.model_copy(update={"conditions": conditions})
    return first | scheduled(admitted, generation, pool=pool, node=node, worker=worker)


def waiting_for_pool(
    status: GenerationJobStatus, generation: int | None, message: str
) -> dict[str, Any]:
    """A Queued job waits for a pool at its maxReplicas (Scheduled False, saying which).
    It names its phase and attempt, so that it never lands on a job dispatched meanwhile
    (`may_write`)."""
    return {
        "phase": JobPhase.QUEUED,
        "attempts": status.attempts,
        "conditions": with_condition(
            status,
            generation,
            SCHEDULED,
            ConditionStatus.FALSE,
            Reason.POOL_AT_MAX_REPLICAS,
            message,
        ),
    }


def running(started_at: datetime) -> dict[str, Any]:
    return {
        "phase": JobPhase.RUNNING,
        "startedAt": instant(started_at),
        "reason": Reason.STARTED,
        "message": "generating",
    }


def progress(step: int, total_steps: int) -> dict[str, Any]:
    return {"progress": {"step": step, "totalSteps": total_steps}}


def succeeded(
    status: GenerationJobStatus,
    generation: int | None,
    *,
    outputs: list[JobOutput],
    model_digest: str,
    lora_digests: dict[str, str],
    total_steps: int,
    completed_at: datetime | None = None,
) -> dict[str, Any]:
    """Succeeded, at `completed_at` (the worker's report), else now."""
    message = f"{len(outputs)} image(s) written"
    return {
        "phase": JobPhase.SUCCEEDED,
        "outputs": [o.model_dump(mode="json", by_alias=True) for o in outputs],
        "modelDigest": model_digest,
        "loraDigests": lora_digests or None,
        "progress": {"step": total_steps, "totalSteps": total_steps},
        "completedAt": instant(completed_at or now()),
        "reason": Reason.SUCCEEDED,
        "message": message,
        "conditions": with_condition(
            status, generation, COMPLETE, ConditionStatus.TRUE, Reason.SUCCEEDED, message
        ),
    }


def finished_unsuccessfully(
    status: GenerationJobStatus,
    generation: int | None,
    *,
    phase: JobPhase,
    reason: str,
    message: str,
) -> dict[str, Any]:
    """Failed or Cancelled, with the reason and message on the status and its condition."""
    return {
        "phase": phase,
        "completedAt": instant(now()),
        "reason": reason,
        "message": message,
        "conditions": with_condition(
            status, generation, COMPLETE, ConditionStatus.FALSE, reason, message
        ),
    }


def over_stored_conditions(patch: dict[str, Any], stored: Any) -> dict[str, Any]:
    """The patch with its conditions merged by type over the stored status's (the patch's
    win): a merge patch replaces the list whole, and a patch computed from an earlier read,
    or merged with others by the status writer, must not drop a condition written since.
    No write removes a condition type."""
    conditions = patch.get("conditions")
    kept = stored.get("conditions") if isinstance(stored, Mapping) else None
    if not conditions or not isinstance(kept, list):
        return patch
    by_type = {c["type"]: dict(c) for c in kept if isinstance(c, Mapping) and "type" in c}
    by_type |= {c["type"]: c for c in conditions}
    return patch | {"conditions": list(by_type.values())}


# The order a job moves through while unfinished; a patch never moves it back, except a
# requeue (Queued with a higher attempt).
_ORDER = {
    JobPhase.PENDING: 0,
    JobPhase.QUEUED: 1,
    JobPhase.SCHEDULED: 2,
    JobPhase.RUNNING: 3,
}


def may_write(current: GenerationJobStatus, patch: dict[str, Any]) -> bool:
    """Whether `patch` may land on a job whose stored status is `current`: phases only move
    forward, a finished job keeps its phase and final progress, and no patch is about an
    attempt older than the stored one. A late or reordered write is dropped, not applied."""
    phase = current.phase or JobPhase.PENDING
    attempts = patch.get("attempts")
    if attempts is not None and attempts < current.attempts:
        return False
    new = patch.get("phase")
    if new is None:
        return not (phase.finished and "progress" in patch)
    new = JobPhase(new)
    if phase.finished:
        return False
    if new.finished:
        return True
    if new is JobPhase.QUEUED and _ORDER[phase] > _ORDER[JobPhase.QUEUED]:
        return attempts is not None and attempts > current.attempts
    return _ORDER[new] >= _ORDER[phase]
