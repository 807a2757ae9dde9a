"""TrainingJob (diffleet.io/v1alpha1): fine-tune a LoRA of a checkpoint (or learn a
textual-inversion embedding for it) on a dataset of captioned images, on the same GPU
pools as inference (issue 20).

The spec is what the worker's trainer runs (diffleet_worker.training); the status is
what the operator writes (diffleet_operator.training): the CR status is the source of
truth, as for GenerationJobs.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StringConstraints, model_validator

from diffleet_core.resources.base import SpecModel, StatusModel
from diffleet_core.resources.conditions import Condition
from diffleet_core.resources.generation_job import (
    ANY_GPU_CLASS,
    MAX_PROMPT_LENGTH,
    MAX_SEED,
    ModelName,
    S3Uri,
)
from diffleet_core.resources.text import GpuType, Text

KIND = "TrainingJob"
PLURAL = "trainingjobs"
SHORT_NAME = "tj"
# Label on the ModelCache a training created (its LoRA or embedding): the training's name.
TRAINED_BY_LABEL = "diffleet.io/trained-by"
# Condition types: Admitted (False with a DatasetReason or ModelNotFound/ModelNotReady when
# refused), Complete (True when Succeeded: the trained file's ModelCache is Ready).
ADMITTED = "Admitted"
COMPLETE = "Complete"
MAX_VALIDATION_PROMPTS = 8


class TrainingMethod(StrEnum):
    LORA = "lora"
    # One new token's embedding row, served as a ModelCache of type embedding whose name
    # is the token (diffleet_worker.embeddings).
    TEXTUAL_INVERSION = "textual-inversion"


# The word of the captions that stands for the concept: one lowercase word, so that it
# is found and replaced by the learned token without tokenizer subtleties.
Placeholder = Annotated[
    str, StringConstraints(max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
]

PLACEHOLDER_RULE = "placeholder is required for textual-inversion, and not allowed for lora"
TEXT_ENCODER_RULE = "trainTextEncoder must be false for textual-inversion"


class TrainingOutput(SpecModel):
    name: ModelName = Field(
        description="The ModelCache created in the training's namespace on success (a lora,"
        " or for textual-inversion an embedding whose name is the token prompts use)."
    )


class TrainingJobSpec(SpecModel):
    """What to train. Immutable after creation, except `cancel` (false to true only)."""

    base_model: ModelName = Field(
        description="ModelCache (a checkpoint) to train on: this namespace first, then"
        " diffleet-system."
    )
    dataset: S3Uri = Field(
        description="Folder of images (png, jpeg, webp), each with a same-name .txt caption."
    )
    output: TrainingOutput = Field(description="Where the result goes.")
    method: TrainingMethod = Field(
        default=TrainingMethod.LORA, description="What is trained: lora or textual-inversion."
    )
    placeholder: Placeholder | None = Field(
        default=None,
        description="The captions' word for the concept, replaced by output.name (the learned"
        " token); required for textual-inversion, not allowed for lora.",
    )
    rank: StrictInt = Field(
        default=8, ge=1, le=128, description="The LoRA's rank; ignored for textual-inversion."
    )
    steps: StrictInt = Field(default=500, ge=1, le=100000, description="Optimizer steps.")
    learning_rate: StrictFloat = Field(
        default=1e-4, gt=0, le=1, description="AdamW's learning rate."
    )
    batch_size: StrictInt = Field(default=1, ge=1, le=64, description="Images per step.")
    resolution: StrictInt = Field(
        default=512, ge=64, le=2048, multiple_of=8, description="Side of the square crops."
    )
    train_text_encoder: StrictBool = Field(
        default=False, description="Also put a LoRA on the text encoder's attention."
    )
    seed: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Random seed; when absent the operator picks one (status.seed).",
    )
    checkpoint_every_steps: StrictInt = Field(
        default=100,
        ge=1,
        le=100000,
        description="A checkpoint is saved to S3 this often (training resumes from the last).",
    )
    gpu_class: GpuType = Field(
        default=ANY_GPU_CLASS, description="GPU type to run on (a GPUPool's gpuType), or any."
    )
    validation_prompts: list[Annotated[Text, Field(max_length=MAX_PROMPT_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_VALIDATION_PROMPTS,
        description="Rendered every checkpointEverySteps steps and at the end.",
    )
    cancel: StrictBool = Field(default=False, description="Set to true to cancel the training.")

    @model_validator(mode="after")
    def check_rules(self) -> Self:
        """The CRD's cross-field CEL rules, with the same messages."""
        for rule in training_rule_violations(self):
            raise ValueError(rule)
        return self


def training_rule_violations(spec: TrainingJobSpec) -> list[str]:
    """Messages of the cross-field rules `spec` breaks (the CRD's CEL rules)."""
    inversion = spec.method is TrainingMethod.TEXTUAL_INVERSION
    checks = [
        ((spec.placeholder is not None) != inversion, PLACEHOLDER_RULE),
        (inversion and spec.train_text_encoder, TEXT_ENCODER_RULE),
    ]
    return [message for broken, message in checks if broken]


class TrainingPhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (TrainingPhase.SUCCEEDED, TrainingPhase.FAILED, TrainingPhase.CANCELLED)


class TrainingCheckpoint(StatusModel):
    """A checkpoint saved after `step` steps (adapters, optimizer state and step)."""

    step: int = Field(ge=1)
    uri: str


class ValidationImage(StatusModel):
    """The image of the `index`-th validation prompt rendered after `step` steps."""

    step: int = Field(ge=0)
    index: int = Field(ge=0)
    uri: str


class TrainedModel(StatusModel):
    """The file (a LoRA or an embedding) a finished training produced, and the
    ModelCache that serves it."""

    model: str
    uri: str
    digest: str
    size_bytes: int = Field(ge=0)


class TrainingJobStatus(StatusModel):
    phase: TrainingPhase | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    # Dispatches so far; each preemption or lost worker starts another from a checkpoint.
    attempts: int = Field(default=0, ge=0)
    pool: str | None = None
    worker: str | None = None
    # The step reached (of spec.steps), and the steps run over every attempt: steps run
    # again after a resume count twice there.
    step: int = Field(default=0, ge=0)
    steps_run: int = Field(default=0, ge=0)
    # The mean loss of the recent steps (the last progress report's window).
    loss: float | None = None
    preemptions: int = Field(default=0, ge=0)
    checkpoints: list[TrainingCheckpoint] | None = None
    validation_images: list[ValidationImage] | None = None
    output: TrainedModel | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
