"""A TrainingJob's admission: its base model (a Ready checkpoint, in its namespace then
the platform's), its output's name (not a ModelCache someone else made) and its dataset
judged from the listing by the rules the worker applies, each refusal naming the field."""

from collections.abc import Mapping
from typing import Any

import pytest

from diffleet_core.datasets import DatasetReason
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.training_job import TRAINED_BY_LABEL, TrainingJobSpec
from diffleet_core.storage import S3Location
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.queue.admission import ResolvedModel
from diffleet_operator.training.admission import (
    Refused,
    Waits,
    base_model,
    choose_seed,
    dataset_examples,
    output_taken,
)

SYSTEM = "diffleet-system"
TEAM = "team"
UPLOADS = "diffleet-uploads"
DATASET = f"s3://{UPLOADS}/{TEAM}/datasets/shapes/"


def model(
    name: str,
    namespace: str = SYSTEM,
    *,
    kind: str = "checkpoint",
    phase: str = "Ready",
    **meta: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, **meta},
        "spec": {
            "source": f"s3://models/{name}.safetensors",
            "format": "safetensors",
            "type": kind,
            "baseModel": "sd15",
        },
        "status": {"phase": phase, "digest": f"sha256-{name}"},
    }


def index(*bodies: Mapping[str, Any]) -> ModelIndex:
    models = ModelIndex()
    for body in bodies:
        models.observe(body)
    return models


def spec(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {"baseModel": "sd", "dataset": DATASET, "output": {"name": "zorp"}} | fields
    )


def test_the_base_model_is_a_ready_checkpoint_of_the_namespace_first() -> None:
    models = index(model("sd"), model("sd", TEAM))
    found = base_model(models, TEAM, spec(), SYSTEM)
    assert isinstance(found, ResolvedModel)
    assert found.ref.namespace == TEAM


def test_an_unknown_base_model_is_refused_naming_the_field() -> None:
    found = base_model(index(), TEAM, spec(), SYSTEM)
    assert isinstance(found, Refused)
    assert found.reason == Reason.MODEL_NOT_FOUND
    assert found.message.startswith("spec.baseModel: ")


def test_a_base_model_not_ready_waits() -> None:
    found = base_model(index(model("sd", phase="Pending")), TEAM, spec(), SYSTEM)
    assert isinstance(found, Waits)
    assert found.reason == Reason.MODEL_NOT_READY


def test_a_base_model_that_is_no_checkpoint_is_refused() -> None:
    found = base_model(index(model("sd", kind="lora")), TEAM, spec(), SYSTEM)
    assert isinstance(found, Refused)
    assert found.reason == Reason.INVALID_SPEC
    assert "not a checkpoint" in found.message


def test_the_output_may_be_only_a_model_cache_this_training_made() -> None:
    ours = model("zorp", TEAM, kind="lora", labels={TRAINED_BY_LABEL: "t1"})
    assert output_taken(index(ours), TEAM, spec(), "t1") is None
    taken = output_taken(index(ours), TEAM, spec(), "t2")
    assert isinstance(taken, Refused)
    assert taken.reason == Reason.INVALID_SPEC
    assert taken.message.startswith("spec.output.name: ")
    assert output_taken(index(), TEAM, spec(), "t2") is None


def listing(objects: dict[str, int] | None) -> Any:
    def list_objects(location: S3Location) -> dict[str, int] | None:
        if objects is None:
            return None
        return {key: size for key, size in objects.items() if key.startswith(location.key)}

    return list_objects


PREFIX = f"{TEAM}/datasets/shapes/"


def test_a_dataset_counts_its_captioned_images() -> None:
    objects = {f"{PREFIX}{i}.png": 100 for i in range(3)} | {
        f"{PREFIX}{i}.txt": 10 for i in range(3)
    }
    assert dataset_examples(listing(objects), spec(), TEAM, UPLOADS) == 3


@pytest.mark.parametrize(
    ("objects", "dataset", "reason"),
    [
        ({f"{PREFIX}1.png": 100}, DATASET, DatasetReason.MISSING_CAPTIONS),
        ({}, DATASET, DatasetReason.NO_IMAGES),
        (None, DATASET, DatasetReason.NOT_FOUND),
        ({f"{PREFIX}m.pt": 1}, DATASET, DatasetReason.PICKLE_FILE),
        ({}, f"s3://{UPLOADS}/other/datasets/x/", DatasetReason.OUTSIDE_NAMESPACE),
    ],
)
def test_a_refused_dataset_names_the_field_and_the_rule(
    objects: dict[str, int] | None, dataset: str, reason: DatasetReason
) -> None:
    refused = dataset_examples(listing(objects), spec(dataset=dataset), TEAM, UPLOADS)
    assert isinstance(refused, Refused)
    assert refused.reason == reason
    assert refused.message.startswith(f"spec.dataset {dataset!r}: ")


def test_the_seed_is_the_spec_s_else_random() -> None:
    assert choose_seed(spec(seed=7)) == 7
    assert len({choose_seed(spec()) for _ in range(5)}) > 1
