"""A simulated runner: the real protocol with scripted timings instead of diffusers.

It is how the scheduler is tested and benchmarked at fleet scale on one CPU: load time
for cold and warm models, a fixed time per step, and real PNG outputs in S3 (one small
image per batch item, uploaded as the real worker's are, retries included), with the real
runner's stage spans but "fetch" (it reads no input image)."""

import asyncio
import io
from typing import Any

from PIL import Image

from diffleet_core.messages import DispatchedJob, ModelRef
from diffleet_core.telemetry import tracer
from diffleet_worker.config import WorkerSettings
from diffleet_worker.outputs import upload_png
from diffleet_worker.runner import JobCancelledError, RunFailedError, RunResult, StepCallback


class SimulatedRunner:
    def __init__(self, settings: WorkerSettings, s3: Any) -> None:
        self.settings = settings
        self.s3 = s3
        self._hot: list[str] = list(settings.sim_hot_models)
        self._warm: list[str] = list(settings.sim_warm_models)

    def hot_models(self) -> list[str]:
        return list(self._hot)

    def warm_models(self) -> list[str]:
        return list(self._warm)

    async def run(
        self, order: DispatchedJob, cancelled: asyncio.Event, on_step: StepCallback
    ) -> RunResult:
        if self.settings.sim_fail_reason:
            raise RunFailedError(self.settings.sim_fail_reason, "simulated failure")
        with tracer.start_as_current_span("load"):
            await self._load(order.model.digest)
        total = order.spec.steps
        with tracer.start_as_current_span("denoise"):
            for step in range(1, total + 1):
                if cancelled.is_set():
                    raise JobCancelledError
                await asyncio.sleep(self.settings.sim_step_seconds)
                await on_step(step, total, (total - step) * self.settings.sim_step_seconds, None)
        with tracer.start_as_current_span("encode"):
            pngs = [_png(order) for _ in range(order.spec.batch_size)]
        with tracer.start_as_current_span("upload"):
            outputs = [
                await asyncio.to_thread(
                    upload_png,
                    self.s3,
                    order,
                    index,
                    png,
                    self.settings.worker_id,
                    self.settings.s3_patience_seconds,
                )
                for index, png in enumerate(pngs)
            ]
        return RunResult(
            outputs=outputs,
            model_digest=order.model.digest,
            lora_digests={lora.name: lora.digest for lora in order.loras},
        )

    async def warm(self, model: ModelRef) -> None:
        await self._load(model.digest)

    async def _load(self, digest: str) -> None:
        if digest in self._hot:
            self._hot.remove(digest)
        elif digest in self._warm:
            await asyncio.sleep(self.settings.sim_warm_load_seconds)
        else:
            await asyncio.sleep(self.settings.sim_load_seconds)
            self._warm.append(digest)
        self._hot.insert(0, digest)


def _png(order: DispatchedJob) -> bytes:
    """A small image standing for the job's output (its colour from the seed)."""
    spec = order.spec
    image = Image.new("RGB", (spec.width // 8, spec.height // 8), (order.seed % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
