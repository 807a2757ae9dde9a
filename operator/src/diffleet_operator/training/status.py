"""Status patches of a TrainingJob, one function per transition (pure).

Each returns the merge patch for `status`, computed from the training as last read: a
merge patch replaces lists whole, so the conditions, checkpoints and validation images
are the stored ones with the new entries added."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from diffleet_core.resources.conditions import Condition, ConditionStatus, Reason
from diffleet_core.resources.training_job import (
    ADMITTED,
    COMPLETE,
    TrainedModel,
    TrainingCheckpoint,
    TrainingPhase,
    ValidationImage,
)
from diffleet_operator.status import instant, now
from diffleet_operator.training.records import TrackedTraining


def conditions(
    training: TrackedTraining, kind: str, state: ConditionStatus, reason: str, message: str
) -> list[dict[str, Any]]:
    """The training's conditions with `kind` set; its transition time moves on a change."""
    by_type = {c.type: c for c in training.status.conditions or []}
    previous = by_type.get(kind)
    moved = previous is None or previous.status != state
    by_type[kind] = Condition(
        type=kind,
        status=state,
        reason=reason,
        message=message,
        last_transition_time=now() if moved or previous is None else previous.last_transition_time,
        observed_generation=training.generation,
    )
    return [_dump(c) for c in by_type.values()]


def refused(training: TrackedTraining, reason: str, message: str) -> dict[str, Any]:
    """Admission refused it for good (a dataset, model or spec rule)."""
    return {
        **ended(training, TrainingPhase.FAILED, reason, message),
        "conditions": conditions(training, ADMITTED, ConditionStatus.FALSE, reason, message),
    }


def waiting(training: TrackedTraining, reason: str, message: str) -> dict[str, Any]:
    """It waits in Pending for its base model to be Ready."""
    return {
        "phase": TrainingPhase.PENDING,
        "reason": reason,
        "message": message,
        "observedGeneration": training.generation,
        "conditions": conditions(training, ADMITTED, ConditionStatus.FALSE, reason, message),
    }


def queued(training: TrackedTraining, seed: int, examples: int) -> dict[str, Any]:
    """Admitted: in the training queue, attempts 0."""
    message = f"{examples} example(s); waiting for a slot no inference job wants"
    return {
        "phase": TrainingPhase.QUEUED,
        "seed": seed,
        "attempts": training.status.attempts,
        "queuedAt": instant(now()),
        "reason": Reason.ADMITTED,
        "message": message,
        "observedGeneration": training.generation,
        "conditions": conditions(
            training, ADMITTED, ConditionStatus.TRUE, Reason.ADMITTED, message
        ),
    }


def requeued(
    training: TrackedTraining,
    reason: str,
    message: str,
    *,
    preempted: bool,
    checkpoint: TrainingCheckpoint | None = None,
    steps_run: int | None = None,
) -> dict[str, Any]:
    """Back in the training queue (preempted, its worker lost, a retryable failure): the
    next attempt resumes from its last checkpoint."""
    patch: dict[str, Any] = {
        "phase": TrainingPhase.QUEUED,
        "worker": None,
        "pool": None,
        "queuedAt": instant(now()),
        "reason": reason,
        "message": message,
        "preemptions": training.status.preemptions + (1 if preempted else 0),
    }
    return patch | checkpoint_fields(training, checkpoint, steps_run)


def running(training: TrackedTraining, worker: str, pool: str, attempt: int) -> dict[str, Any]:
    """Dispatched to the worker: the attempt runs there."""
    return {
        "phase": TrainingPhase.RUNNING,
        "worker": worker,
        "pool": pool,
        "attempts": attempt,
        "reason": Reason.DISPATCHED,
        "message": f"attempt {attempt} on worker {worker} (pool {pool})",
    }


def started(training: TrackedTraining, step: int, at: datetime, worker: str) -> dict[str, Any]:
    patch: dict[str, Any] = {
        "step": step,
        "worker": worker,
        "reason": Reason.STARTED,
        "message": f"attempt {training.status.attempts} started at step {step}",
    }
    if training.status.started_at is None:
        patch["startedAt"] = instant(at)
    return patch


def checkpointed(
    training: TrackedTraining,
    checkpoint: TrainingCheckpoint,
    images: Sequence[ValidationImage],
    steps_run: int,
    loss: float | None,
) -> dict[str, Any]:
    patch = checkpoint_fields(training, checkpoint, steps_run) | _images(training, images)
    return patch | ({"loss": loss} if loss is not None else {})


def progress(step: int, steps_run: int, loss: float) -> dict[str, Any]:
    return {"step": step, "stepsRun": steps_run, "loss": loss}


def registering(
    training: TrackedTraining,
    output: TrainedModel,
    step: int,
    steps_run: int,
    loss: float | None,
    images: Sequence[ValidationImage],
) -> dict[str, Any]:
    """The LoRA is written and its ModelCache created: Succeeded once that is Ready."""
    message = f"ModelCache {output.model!r} is being verified"
    patch = {
        "step": step,
        "stepsRun": steps_run,
        "output": _dump(output),
        "worker": None,
        "reason": Reason.REGISTERING,
        "message": message,
        "conditions": conditions(
            training, COMPLETE, ConditionStatus.FALSE, Reason.REGISTERING, message
        ),
    }
    return patch | _images(training, images) | ({"loss": loss} if loss is not None else {})


def succeeded(training: TrackedTraining, model: str) -> dict[str, Any]:
    message = f"ModelCache {model!r} is Ready"
    return {
        "phase": TrainingPhase.SUCCEEDED,
        "completedAt": instant(now()),
        "reason": Reason.SUCCEEDED,
        "message": message,
        "conditions": conditions(
            training, COMPLETE, ConditionStatus.TRUE, Reason.SUCCEEDED, message
        ),
    }


def ended(
    training: TrackedTraining, phase: TrainingPhase, reason: str, message: str
) -> dict[str, Any]:
    """Failed or Cancelled (its checkpoints are kept)."""
    return {
        "phase": phase,
        "worker": None,
        "completedAt": instant(now()),
        "reason": reason,
        "message": message,
        "observedGeneration": training.generation,
    }


def checkpoint_fields(
    training: TrackedTraining, checkpoint: TrainingCheckpoint | None, steps_run: int | None
) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    if steps_run is not None:
        patch["stepsRun"] = max(steps_run, training.status.steps_run)
    if checkpoint is None:
        return patch
    stored = list(training.status.checkpoints or [])
    if checkpoint not in stored:
        stored.append(checkpoint)
    return patch | {"step": checkpoint.step, "checkpoints": [_dump(c) for c in stored]}


def _images(training: TrackedTraining, images: Sequence[ValidationImage]) -> dict[str, Any]:
    if not images:
        return {}
    stored = list(training.status.validation_images or [])
    stored += [image for image in images if image not in stored]
    return {"validationImages": [_dump(image) for image in stored]}


def _dump(model: Condition | TrainingCheckpoint | ValidationImage | TrainedModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
