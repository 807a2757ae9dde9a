"""TrainingJob (diffleet.io/v1alpha1): fine-tune a LoRA of a checkpoint on a dataset of
captioned images, on the same GPU pools as inference (issue 20).

This is the spec the worker's trainer runs (diffleet_worker.training). The CRD, the
operator's admission, queue and preemption, and the REST doors come with the rest of
issue 20; until then a training runs only where code calls the trainer.
"""

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from diffleet_core.resources.base import SpecModel
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
MAX_VALIDATION_PROMPTS = 8


class TrainingMethod(StrEnum):
    LORA = "lora"


class TrainingOutput(SpecModel):
    name: ModelName = Field(
        description="The LoRA ModelCache created in the job's namespace on success."
    )


class TrainingJobSpec(SpecModel):
    """What to train. Immutable after creation, except `cancel` (false to true only)."""

    base_model: ModelName = Field(
        description="A checkpoint ModelCache: this namespace first, then diffleet-system."
    )
    dataset: S3Uri = Field(
        description="A folder of images (png, jpeg, webp), each with a same-name .txt caption."
    )
    output: TrainingOutput = Field(description="Where the result goes.")
    method: TrainingMethod = Field(default=TrainingMethod.LORA, description="lora.")
    rank: StrictInt = Field(default=8, ge=1, le=128, description="The LoRA's rank.")
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
        description="Saved to S3 this often: training resumes from the last checkpoint.",
    )
    gpu_class: GpuType = Field(
        default=ANY_GPU_CLASS, description="GPU type to run on (a GPUPool's gpuType), or any."
    )
    validation_prompts: list[Annotated[Text, Field(max_length=MAX_PROMPT_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_VALIDATION_PROMPTS,
        description="Rendered at each checkpoint and at the end.",
    )
    cancel: StrictBool = Field(default=False, description="Set to true to cancel the job.")
