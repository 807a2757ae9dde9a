"""What runs a job: the diffusers pipelines (issue 4) or the simulation. The worker
service drives a Runner and speaks the protocol around it; a Trainer runs a training
(issue 20) the same way, through hooks the service turns into events."""

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from diffleet_core.messages import DispatchedJob, DispatchedTraining, ModelRef
from diffleet_core.resources.generation_job import JobOutput
from diffleet_core.resources.training_job import TrainingCheckpoint, ValidationImage

# Called after each denoising step with (step, total_steps, eta_seconds, preview), the
# preview being a small PNG (base64) every few steps, else None.
StepCallback = Callable[[int, int, float | None, str | None], Coroutine[Any, Any, None]]


class JobCancelledError(Exception):
    """The job was cancelled while running; raised within one step."""


class RunFailedError(Exception):
    """The job cannot succeed; `reason` is a status reason (e.g. OutOfMemory)."""

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class RunResult:
    outputs: list[JobOutput]
    model_digest: str
    lora_digests: dict[str, str]


class Runner(Protocol):
    def hot_models(self) -> list[str]: ...

    def warm_models(self) -> list[str]: ...

    def hot_slots(self) -> int | None:
        """How many checkpoints the hot tier holds at most; None: bounded by bytes only."""

    async def run(
        self, order: DispatchedJob, cancelled: asyncio.Event, on_step: StepCallback
    ) -> RunResult: ...

    async def warm(self, model: ModelRef) -> None:
        """Loads `model` into the hot tier, as a job would, without running anything;
        raises RunFailedError when it cannot be loaded."""


@dataclass(frozen=True)
class TrainedFile:
    """The LoRA a training wrote: its s3:// URI, sha256 (hex) and size."""

    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class TrainingHooks:
    """What a Trainer calls while it runs, from whichever thread runs the steps (the
    service's hooks are thread-safe).

    should_stop: asked at each step boundary; True stops the run there (with a
        checkpoint when it ran a step).
    on_start: the step resumed from (0: none) and the examples, once both are known.
    on_progress: a step done, with its loss.
    on_checkpoint: a checkpoint saved, with the validation images rendered with it.
    """

    should_stop: Callable[[], bool]
    on_start: Callable[[int, int], None]
    on_progress: Callable[[int, float], None]
    on_checkpoint: Callable[[TrainingCheckpoint, list[ValidationImage]], None]


@dataclass(frozen=True)
class TrainingOutcome:
    """A run that `finished` (with its LoRA and final validation images) or stopped at
    `step` (with the checkpoint of that step, when it ran any)."""

    finished: bool
    step: int
    steps_run: int
    checkpoint: TrainingCheckpoint | None = None
    lora: TrainedFile | None = None
    validation_images: list[ValidationImage] = field(default_factory=list)
    cpu_seconds: float = 0.0


class Trainer(Protocol):
    async def train(self, order: DispatchedTraining, hooks: TrainingHooks) -> TrainingOutcome:
        """Runs the order from its latest checkpoint; raises RunFailedError (a model that
        cannot be fetched or loaded) or DatasetRefusedError (the dataset's rules)."""


class TrainingRunner(Runner, Trainer, Protocol):
    """What a worker process runs: jobs and trainings."""
