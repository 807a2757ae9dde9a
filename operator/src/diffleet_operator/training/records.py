"""TrainingJobs as the operator last saw them, fed by kopf's watch (like the job cache)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffleet_core.messages import JobRef
from diffleet_core.resources.training_job import (
    TrainingJobSpec,
    TrainingJobStatus,
    TrainingPhase,
)


@dataclass(frozen=True)
class TrackedTraining:
    namespace: str
    name: str
    uid: str
    generation: int | None
    resource_version: str
    spec: TrainingJobSpec
    status: TrainingJobStatus
    body: Mapping[str, Any]
    deleting: bool

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "TrackedTraining":
        """Raises pydantic's ValidationError for a spec or status it cannot read."""
        meta = body["metadata"]
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=meta.get("generation"),
            resource_version=str(meta.get("resourceVersion", "")),
            spec=TrainingJobSpec.model_validate(body.get("spec") or {}),
            status=TrainingJobStatus.model_validate(body.get("status") or {}),
            body=body,
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def phase(self) -> TrainingPhase:
        return self.status.phase or TrainingPhase.PENDING

    @property
    def cancel_requested(self) -> bool:
        return self.spec.cancel and not self.phase.finished

    def ref(self, attempt: int) -> JobRef:
        return JobRef(uid=self.uid, namespace=self.namespace, name=self.name, attempt=attempt)

    def queued_as(self, attempt: int) -> bool:
        """It waits in the training queue as that attempt: any other message is stale."""
        return (
            self.phase is TrainingPhase.QUEUED
            and self.status.attempts + 1 == attempt
            and not self.spec.cancel
            and not self.deleting
        )

    def running_as(self, attempt: int) -> bool:
        """That attempt is the one running: a worker's report of any other is stale."""
        return self.phase is TrainingPhase.RUNNING and self.status.attempts == attempt


class TrainingIndex:
    def __init__(self) -> None:
        self._trainings: dict[str, TrackedTraining] = {}

    def observe(self, body: Mapping[str, Any]) -> TrackedTraining:
        training = TrackedTraining.of(body)
        self._trainings[training.uid] = training
        return training

    def remove(self, uid: str) -> None:
        self._trainings.pop(uid, None)

    def get(self, uid: str) -> TrackedTraining | None:
        return self._trainings.get(uid)

    def named(self, namespace: str, name: str) -> TrackedTraining | None:
        return next(
            (t for t in self._trainings.values() if (t.namespace, t.name) == (namespace, name)),
            None,
        )

    def all(self) -> list[TrackedTraining]:
        return list(self._trainings.values())
