"""What runs a job: the diffusers pipelines (issue 4) or the simulation. The worker
service drives a Runner and speaks the protocol around it."""

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from diffleet_core.messages import DispatchedJob, ModelRef
from diffleet_core.resources.generation_job import JobOutput

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
