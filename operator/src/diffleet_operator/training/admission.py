"""Admission of a TrainingJob (pure but for the dataset's listing): its base model, its
output's name and its dataset, refused with the rule and the field named.

The dataset is judged from its S3 listing by the rules the worker applies too
(diffleet_core.datasets), so a folder the worker would refuse is refused before it waits
for a GPU; what only reading the images tells (their pixels, their captions' text) the
worker still refuses (TrainingFailed with the DatasetReason)."""

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from diffleet_core.datasets import (
    DatasetLimits,
    DatasetReason,
    DatasetRefusedError,
    check_tenant_scope,
    select_examples,
)
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import MAX_SEED
from diffleet_core.resources.model_cache import ModelType
from diffleet_core.resources.training_job import TRAINED_BY_LABEL, TrainingJobSpec
from diffleet_core.storage import S3Location
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.queue.admission import NotReady, ResolvedModel, resolve_model

# The dataset's objects under a location: key -> size in bytes (None: no such bucket).
Listing = Callable[[S3Location], Mapping[str, int] | None]


@dataclass(frozen=True)
class Refused:
    """Never admitted: phase Failed, condition Admitted False with this reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class Waits:
    """Not yet: it stays Pending and is looked at again (its base model not Ready)."""

    reason: str
    message: str


def base_model(
    models: ModelIndex, namespace: str, spec: TrainingJobSpec, system_namespace: str
) -> ResolvedModel | Refused | Waits:
    """spec.baseModel: a ModelCache of type checkpoint, in the namespace then the system
    namespace, Ready."""
    found = resolve_model(models, namespace, spec.base_model, system_namespace)
    if isinstance(found, NotReady):
        if found.reason is Reason.MODEL_NOT_FOUND:
            return Refused(found.reason, f"spec.baseModel: {found.message}")
        return Waits(found.reason, f"spec.baseModel: {found.message}")
    if found.spec.type is not ModelType.CHECKPOINT:
        return Refused(
            Reason.INVALID_SPEC,
            f"spec.baseModel: ModelCache {spec.base_model!r} is a {found.spec.type},"
            " not a checkpoint",
        )
    return found


def output_taken(
    models: ModelIndex, namespace: str, spec: TrainingJobSpec, training: str
) -> Refused | None:
    """spec.output.name may not be a ModelCache that this training did not make."""
    body = models.get(namespace, spec.output.name)
    if body is None or trained_by(body) == training:
        return None
    return Refused(
        Reason.INVALID_SPEC,
        f"spec.output.name: ModelCache {spec.output.name!r} already exists in {namespace!r}"
        " and was not made by this training",
    )


def dataset_examples(
    listing: Listing, spec: TrainingJobSpec, namespace: str, uploads_bucket: str
) -> int | Refused:
    """The dataset's example count, or why it is refused (naming spec.dataset)."""
    try:
        location = check_tenant_scope(spec.dataset, namespace, uploads_bucket)
        objects = listing(location)
        if objects is None:
            raise DatasetRefusedError(
                DatasetReason.NOT_FOUND, f"bucket {location.bucket!r} does not exist"
            )
        return len(select_examples(objects, location.key, DatasetLimits()))
    except DatasetRefusedError as error:
        return Refused(error.reason, f"spec.dataset {spec.dataset!r}: {error.message}")


def choose_seed(spec: TrainingJobSpec) -> int:
    return spec.seed if spec.seed is not None else secrets.randbelow(MAX_SEED + 1)


def trained_by(body: Mapping[str, Any]) -> str | None:
    labels = body.get("metadata", {}).get("labels") or {}
    value = labels.get(TRAINED_BY_LABEL)
    return str(value) if value is not None else None
