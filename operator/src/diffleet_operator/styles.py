"""The style of each job (GenerationJob spec.style): its StylePreset, looked up in the job's
namespace, then the system namespace, applied at admission (diffleet_core.styles) to the
fields the job's own object leaves out. The styled spec is what the job runs with: its
models, its placement and the order a worker gets. Presets are read with a GET and
remembered MAX_AGE_SECONDS, as content policies are; a styled spec is remembered for the
job's life in this operator (an operator that restarts applies the style again at dispatch).
A read that fails raises: admission tries the job again later."""

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from diffleet_core.model_rules import lookup_namespaces
from diffleet_core.remembered import Remembered
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.style_preset import StylePresetSpec
from diffleet_core.styles import apply_style, explicit_fields
from diffleet_operator.cache.jobs import TrackedJob

MAX_AGE_SECONDS = 10.0

# (namespace, name) -> the StylePreset, None when there is no such preset.
ReadPreset = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class StyleRefused:
    """The job's style cannot apply: the job fails (reason InvalidSpec) with this message,
    which names spec.style."""

    message: str


class JobStyles:
    def __init__(
        self,
        read: ReadPreset,
        system_namespace: str,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._system_namespace = system_namespace
        # Each preset's spec (None: there is no such preset).
        self._presets: Remembered[Mapping[str, Any] | None] = Remembered(
            max_age_seconds, clock=clock
        )
        # uid -> the job's spec with its style applied.
        self._styled: dict[str, GenerationJobSpec] = {}

    async def resolve(self, job: TrackedJob) -> GenerationJobSpec | StyleRefused:
        """The job's spec with its style applied (its own spec when it names none)."""
        name = job.spec.style
        if name is None:
            return job.spec
        styled = self._styled.get(job.uid)
        if styled is not None:
            return styled
        for where in lookup_namespaces(job.namespace, self._system_namespace):
            preset = await self._preset(where, name)
            if preset is not None:
                break
        else:
            return StyleRefused(
                f"spec.style: StylePreset {name!r} not found in {job.namespace!r} or"
                f" {self._system_namespace!r}"
            )
        try:
            styled = apply_style(
                job.spec,
                StylePresetSpec.model_validate(preset),
                explicit_fields(job.body.get("spec") or {}),
            )
        except ValidationError as error:
            problems = "; ".join(str(problem["msg"]) for problem in error.errors())
            return StyleRefused(f"spec.style: StylePreset {where}/{name} cannot apply: {problems}")
        self._styled[job.uid] = styled
        return styled

    def spec(self, job: TrackedJob) -> GenerationJobSpec:
        """The job's spec as admission styled it, without a request; its own spec when it
        names no style or this operator has not resolved it yet."""
        return self._styled.get(job.uid, job.spec)

    def forget(self, uid: str) -> None:
        self._styled.pop(uid, None)

    async def _preset(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self._presets.get(namespace, name, lambda: self._spec(namespace, name))

    async def _spec(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        body = await self._read(namespace, name)
        return None if body is None else body.get("spec") or {}
