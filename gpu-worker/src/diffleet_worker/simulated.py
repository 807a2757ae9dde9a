"""A simulated runner: the real protocol with scripted timings instead of diffusers.

It is how the scheduler is tested and benchmarked at fleet scale on one CPU: load time
for cold and warm models, a fixed time per step, and real image files in S3 (one small
placeholder per batch item in the spec's output format, uploaded as the real worker's
are, retries included; a video job's clip of placeholder frames in its video format),
with the real runner's stage spans but "fetch" (it reads no
input image). With `sim_gpu_profile`, load and step times are modelled by the worker's
GPU type instead (sim_profiles.py).

The hot tier holds at most `sim_hot_slots` checkpoints (0: unbounded). A checkpoint not
hot takes `sim_warm_load_seconds` when on local disk, else `sim_load_seconds`; a LoRA
takes no load time. To make room it evicts idle checkpoints the order's `keep_hot` does
not list first, least recently used first, then listed ones; one in use by a job stays.

A training loads its base model as a job does, then runs simulated_training.py."""

import asyncio
import json
import time
from collections import Counter
from typing import Any

from PIL import Image

from diffleet_core.messages import DispatchedJob, DispatchedTraining, ModelRef
from diffleet_core.resources.generation_job import JobOutput
from diffleet_core.telemetry import tracer
from diffleet_worker import metrics
from diffleet_worker.cache.errors import CacheTier
from diffleet_worker.config import WorkerSettings
from diffleet_worker.encoding import encode
from diffleet_worker.outputs import upload_image, upload_video
from diffleet_worker.runner import (
    JobCancelledError,
    RunFailedError,
    RunResult,
    StepCallback,
    TrainingHooks,
    TrainingOutcome,
)
from diffleet_worker.sim_profiles import Timings
from diffleet_worker.simulated_training import SimulatedTraining
from diffleet_worker.video import encode_video


class SimulatedRunner:
    def __init__(self, settings: WorkerSettings, s3: Any) -> None:
        self.settings = settings
        self.s3 = s3
        # Fixed sim_* timings, or modelled by GPU type (sim_gpu_profile).
        self.timings = Timings(settings)
        self._hot: list[str] = list(settings.sim_hot_models)  # most recently used first
        self._warm: list[str] = list(settings.sim_warm_models)
        self._users: Counter[str] = Counter()  # jobs running on each hot checkpoint
        # One load of a checkpoint at a time: a second job for it waits, then finds it hot.
        self._loading: dict[str, asyncio.Lock] = {}

    def hot_models(self) -> list[str]:
        return list(self._hot)

    def warm_models(self) -> list[str]:
        return list(self._warm)

    def hot_slots(self) -> int | None:
        return self.settings.sim_hot_slots or None

    async def run(
        self, order: DispatchedJob, cancelled: asyncio.Event, on_step: StepCallback
    ) -> RunResult:
        if self.settings.sim_fail_reason:
            raise RunFailedError(self.settings.sim_fail_reason, "simulated failure")
        taken = time.time()
        digest = order.model.digest
        with tracer.start_as_current_span("load"):
            tier = await self._load(order.model, order.keep_hot)
        self._users[digest] += 1
        try:
            outputs = await self._generate(order, cancelled, on_step)
        finally:
            self._users[digest] -= 1
        self._record(order, taken, tier)
        return RunResult(
            outputs=outputs,
            model_digest=digest,
            lora_digests={lora.name: lora.digest for lora in order.loras},
        )

    async def warm(self, model: ModelRef) -> None:
        await self._load(model, keep_hot=[])

    async def train(self, order: DispatchedTraining, hooks: TrainingHooks) -> TrainingOutcome:
        if self.settings.sim_fail_reason:
            raise RunFailedError(self.settings.sim_fail_reason, "simulated failure")
        await self._load(order.model, keep_hot=[])
        digest = order.model.digest
        self._users[digest] += 1  # the base model stays hot while it trains
        try:
            step_seconds = self.settings.sim_training_step_seconds
            return await SimulatedTraining(self.s3, order, step_seconds).run(hooks)
        finally:
            self._users[digest] -= 1

    async def _generate(
        self, order: DispatchedJob, cancelled: asyncio.Event, on_step: StepCallback
    ) -> list[Any]:
        total = order.spec.steps
        step_seconds = self.timings.step_seconds(order)
        with tracer.start_as_current_span("denoise"):
            for step in range(1, total + 1):
                if cancelled.is_set():
                    raise JobCancelledError
                await asyncio.sleep(step_seconds)
                await on_step(step, total, (total - step) * step_seconds, None)
        if order.spec.video is not None:
            return [await asyncio.to_thread(self._upload_clip, order)]
        with tracer.start_as_current_span("encode"):
            files = [_placeholder(order) for _ in range(order.spec.batch_size)]
        with tracer.start_as_current_span("upload"):
            return [
                await asyncio.to_thread(
                    upload_image,
                    self.s3,
                    order,
                    index,
                    data,
                    order.spec.output.format,
                    self.settings.worker_id,
                    self.settings.s3_patience_seconds,
                )
                for index, data in enumerate(files)
            ]

    def _upload_clip(self, order: DispatchedJob) -> JobOutput:
        """A video job's placeholder clip, in its video format at its fps."""
        video = order.spec.video
        assert video is not None
        frames = [_placeholder_frame(order)] * video.frames
        clip = encode_video(frames, video.format, video.fps, order.spec.output.quality, "")
        settings = self.settings
        return upload_video(self.s3, order, clip, settings.worker_id, settings.s3_patience_seconds)

    async def _load(self, model: ModelRef, keep_hot: list[str]) -> CacheTier:
        """Makes `model` the most recently used hot checkpoint; the tier it came from."""
        digest = model.digest
        async with self._loading.setdefault(digest, asyncio.Lock()):
            if digest in self._hot:
                self._hot.remove(digest)
                self._hot.insert(0, digest)
                return CacheTier.HOT
            tier = CacheTier.WARM if digest in self._warm else CacheTier.COLD
            await asyncio.sleep(self.timings.load_seconds(model, tier))
            if tier is CacheTier.COLD:
                self._warm.append(digest)
            self._hot.insert(0, digest)
            self._evict(keep_hot)
            metrics.CHECKPOINT_LOADS.labels(tier.value).inc()
            return tier

    def _evict(self, keep_hot: list[str]) -> None:
        """Idle checkpoints out, beyond the slots: those not kept first, least recently
        used first, then kept ones. The newest (just loaded) and busy ones stay."""
        slots = self.settings.sim_hot_slots
        if not slots:
            return
        idle = [digest for digest in reversed(self._hot[1:]) if not self._users[digest]]
        keep = set(keep_hot)
        ranked = [d for d in idle if d not in keep] + [d for d in idle if d in keep]
        for digest in ranked[: max(len(self._hot) - slots, 0)]:
            self._hot.remove(digest)

    def _record(self, order: DispatchedJob, taken: float, tier: CacheTier) -> None:
        if self.settings.sim_record_path is None:
            return
        line = {
            "uid": order.job.uid,
            "worker": self.settings.worker_id,
            "taken": taken,
            "done": time.time(),
            "load": tier.value,
        }
        with self.settings.sim_record_path.open("a") as record:
            record.write(json.dumps(line) + "\n")


def _placeholder(order: DispatchedJob) -> bytes:
    """A small image standing for the job's output: an eighth of its size a side, its
    colour from the seed, its parameters text empty."""
    spec = order.spec
    width, height = spec.output_size
    image = Image.new("RGB", (width // 8, height // 8), (order.seed % 256, 0, 0))
    return encode(image, spec.output.format, spec.output.quality, "")


def _placeholder_frame(order: DispatchedJob) -> Image.Image:
    """A frame of a video job's placeholder clip: as `_placeholder`, its sides even (H.264
    in yuv420p needs them so)."""
    width, height = order.spec.output_size
    size = (max(2, width // 16 * 2), max(2, height // 16 * 2))
    return Image.new("RGB", size, (order.seed % 256, 0, 0))
