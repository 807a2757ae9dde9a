"""What kopf keeps on the objects it handles.

kopf stores a diff base ("last-handled-configuration") on every object that has
change-detecting handlers, one extra write and watch event each. GenerationJobs have
none but the deletion handler (admission and cancellation run from the raw watch), so
kopf keeps no diff base on them: every watch event of a job is a no-op change to kopf,
and its only write on a job is the finalizer. ModelCaches keep theirs (their handlers
react to spec changes).
"""

from collections.abc import Iterable

import kopf

from diffleet_core.resources.generation_job import KIND as GENERATION_JOB

PREFIX = "diffleet.io"


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff base, except on GenerationJobs, which keep none."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX, key="last-handled-configuration")

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        if body.get("kind") == GENERATION_JOB:
            return kopf.BodyEssence()  # nothing to compare; no deep copy of every event
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") == GENERATION_JOB:
            return kopf.BodyEssence()  # "as last handled": no change to detect
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") != GENERATION_JOB:
            super().store(body=body, patch=patch, essence=essence)
