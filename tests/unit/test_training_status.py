"""A TrainingJob's status patches and staleness: a queued message is about one attempt,
a worker's report about the running one; checkpoints and validation images accumulate
(a redelivered report adds nothing); a preemption counts; refusals carry the Admitted
condition."""

from typing import Any

from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import ModelCacheSpec
from diffleet_core.resources.training_job import (
    ADMITTED,
    COMPLETE,
    TRAINED_BY_LABEL,
    TrainedModel,
    TrainingCheckpoint,
    TrainingPhase,
    ValidationImage,
)
from diffleet_operator.training import status
from diffleet_operator.training.records import TrackedTraining
from diffleet_operator.training.service import lora_model_cache


def training(status_fields: dict[str, Any] | None = None, **spec: Any) -> TrackedTraining:
    return TrackedTraining.of(
        {
            "metadata": {
                "namespace": "team",
                "name": "t1",
                "uid": "u1",
                "generation": 1,
                "resourceVersion": "7",
            },
            "spec": {
                "baseModel": "sd",
                "dataset": "s3://bucket/team/datasets/x/",
                "output": {"name": "zorp"},
            }
            | spec,
            "status": status_fields or {},
        }
    )


def test_a_queued_message_is_about_the_next_attempt_of_a_queued_training() -> None:
    queued = training({"phase": "Queued", "attempts": 1})
    assert queued.queued_as(2)
    assert not queued.queued_as(1)
    assert not training({"phase": "Queued", "attempts": 1}, cancel=True).queued_as(2)
    assert not training({"phase": "Running", "attempts": 1}).queued_as(2)


def test_a_report_is_about_the_running_attempt() -> None:
    running = training({"phase": "Running", "attempts": 2})
    assert running.running_as(2)
    assert not running.running_as(1)
    assert not training({"phase": "Queued", "attempts": 2}).running_as(2)


def test_checkpoints_and_images_accumulate_once() -> None:
    first = TrainingCheckpoint(step=10, uri="s3://o/c/10")
    image = ValidationImage(step=10, index=0, uri="s3://o/v/10/0.png")
    patch = status.checkpointed(training({"phase": "Running"}), first, [image], 10, 0.5)
    assert patch["step"] == 10
    assert patch["stepsRun"] == 10
    assert patch["loss"] == 0.5
    again = training({"phase": "Running", **patch})
    repeated = status.checkpointed(again, first, [image], 10, 0.5)
    assert len(repeated["checkpoints"]) == 1
    assert len(repeated["validationImages"]) == 1
    second = TrainingCheckpoint(step=20, uri="s3://o/c/20")
    assert [c["step"] for c in status.checkpointed(again, second, [], 20, None)["checkpoints"]] == [
        10,
        20,
    ]


def test_a_preempted_training_is_queued_again_with_its_checkpoint() -> None:
    running = training({"phase": "Running", "attempts": 1, "worker": "w1", "stepsRun": 12})
    checkpoint = TrainingCheckpoint(step=10, uri="s3://o/c/10")
    patch = status.requeued(
        running, Reason.PREEMPTED, "preempted", preempted=True, checkpoint=checkpoint, steps_run=11
    )
    assert patch["phase"] == TrainingPhase.QUEUED
    assert patch["worker"] is None
    assert patch["preemptions"] == 1
    assert patch["step"] == 10
    assert patch["stepsRun"] == 12  # never less than written
    lost = status.requeued(running, Reason.WORKER_LOST, "lost", preempted=False)
    assert lost["preemptions"] == 0


def test_a_refusal_fails_it_with_the_admitted_condition_false() -> None:
    patch = status.refused(training(), "MissingCaptions", "spec.dataset ...")
    assert patch["phase"] == TrainingPhase.FAILED
    (condition,) = patch["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        ADMITTED,
        "False",
        "MissingCaptions",
    )


def test_registering_then_succeeded_move_the_complete_condition() -> None:
    output = TrainedModel(model="zorp", uri="s3://m/zorp.safetensors", digest="ab", size_bytes=3)
    registering = status.registering(training({"phase": "Running"}), output, 40, 40, 0.1, [])
    assert registering["output"]["digest"] == "ab"
    assert registering["conditions"][0]["reason"] == Reason.REGISTERING
    done = status.succeeded(training({"phase": "Running", **registering}), "zorp")
    assert done["phase"] == TrainingPhase.SUCCEEDED
    assert [(c["type"], c["status"]) for c in done["conditions"]] == [(COMPLETE, "True")]


def test_the_lora_model_cache_is_a_lora_of_the_base_family_labelled_with_the_training() -> None:
    output = TrainedModel(
        model="zorp",
        uri="s3://diffleet-models/team/zorp.safetensors",
        digest="a" * 64,
        size_bytes=3,
    )
    body = lora_model_cache(training(), output, "sd15")
    spec = ModelCacheSpec.model_validate(body["spec"], by_name=False)
    assert (spec.type, spec.format, spec.base_model) == ("lora", "safetensors", "sd15")
    assert spec.sha256 == "a" * 64
    assert body["metadata"]["labels"] == {TRAINED_BY_LABEL: "t1"}
    assert body["metadata"]["namespace"] == "team"
