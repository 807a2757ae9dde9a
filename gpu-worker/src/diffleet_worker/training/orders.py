"""A DispatchedTraining run by the real trainer: the dataset read (through the worker's
dataset cache), the base checkpoint taken from the worker's model cache and loaded as
the trainer's own copy, the steps run with the service's hooks. Blocking: the runner
calls it in a worker thread."""

from typing import Any

import torch

from diffleet_core.datasets import DatasetLimits
from diffleet_core.messages import DispatchedTraining
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType
from diffleet_core.resources.training_job import TrainingCheckpoint, ValidationImage
from diffleet_core.storage import S3Location
from diffleet_worker import metrics
from diffleet_worker.cache import DatasetCache, ModelStore
from diffleet_worker.runner import RunFailedError, TrainedFile, TrainingHooks, TrainingOutcome
from diffleet_worker.training.dataset import read_dataset
from diffleet_worker.training.embedding import SpecError
from diffleet_worker.training.store import TrainingStore
from diffleet_worker.training.trainer import TrainingResult, load_base, trainer_for

# What the trainer trains on (trainer.py: Stable Diffusion 1.5 checkpoints).
TRAINABLE_FAMILIES = (BaseModelFamily.SD15, None)


def train(
    order: DispatchedTraining,
    hooks: TrainingHooks,
    models: ModelStore[Any],
    datasets: DatasetCache,
    s3: Any,
    device: torch.device,
) -> TrainingOutcome:
    check_base(order)
    # The dataset first: a refused one costs no model load.
    examples = read_dataset(s3, order.spec.dataset, DatasetLimits(), datasets)
    with models.fetch(order.model) as fetched:
        metrics.MODEL_SERVED.labels(fetched.tier.value).inc()
        pipe = load_base(fetched.path, device)
    job = order.job
    store = TrainingStore(
        s3, order.output_bucket, order.models_bucket, job.namespace, job.name, job.uid
    )
    try:
        trainer = trainer_for(order.spec, order.seed, pipe, examples, store)
    except SpecError as error:
        raise RunFailedError(Reason.INVALID_SPEC, str(error)) from error

    def checkpointed(step: int, location: S3Location, images: list[S3Location]) -> None:
        checkpoint = TrainingCheckpoint(step=step, uri=location.uri)
        hooks.on_checkpoint(checkpoint, validation_images(step, images))

    result = trainer.run(
        hooks.should_stop,
        hooks.on_progress,
        on_start=lambda step: hooks.on_start(step, len(examples)),
        on_checkpoint=checkpointed,
    )
    return outcome(result, len(order.spec.validation_prompts))


def check_base(order: DispatchedTraining) -> None:
    model = order.model
    if model.type is not ModelType.CHECKPOINT or model.base_model not in TRAINABLE_FAMILIES:
        raise RunFailedError(
            Reason.INVALID_SPEC,
            f"spec.baseModel: {model.name} is a {model.base_model or ''} {model.type};"
            " the trainer trains on Stable Diffusion 1.5 checkpoints only",
        )


def outcome(result: TrainingResult, prompts: int) -> TrainingOutcome:
    """The service's view of a run: the checkpoint it stopped at, or its file (a LoRA or
    an embedding) and the validation images of its last step."""
    trained = result.output
    stopped_at = result.checkpoints[-1] if result.checkpoints and not result.finished else None
    finals = result.validation_images[-prompts:] if prompts else []
    return TrainingOutcome(
        finished=result.finished,
        step=result.step,
        steps_run=result.steps_run,
        checkpoint=(
            None
            if stopped_at is None or result.step == result.resumed_from
            else TrainingCheckpoint(step=result.step, uri=stopped_at.uri)
        ),
        lora=(
            None
            if trained is None
            else TrainedFile(
                uri=trained.location.uri, sha256=trained.sha256, size_bytes=trained.size_bytes
            )
        ),
        validation_images=validation_images(result.step, finals) if result.finished else [],
        cpu_seconds=result.cpu_seconds,
    )


def validation_images(step: int, images: list[S3Location]) -> list[ValidationImage]:
    return [
        ValidationImage(step=step, index=index, uri=image.uri) for index, image in enumerate(images)
    ]
