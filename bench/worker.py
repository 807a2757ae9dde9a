"""Worker benchmark: what the worker adds around the diffusers pipeline call, and the
time to the first image from each cache tier. Against the local stack (RabbitMQ, S3).

1. The model: a "small but not tiny" SD1.5-style pipeline (hack/models, bench-sd15:
   UNet block channels 96/192/384/384), uploaded to S3 like any model.
2. Raw: the same pipeline loaded in this process with the worker's device policy, called
   with the job's parameters (128x128, 20 steps, euler_a, one image).
3. Worker: a WorkerService with the real DiffusersRunner in this process, fed through
   its RabbitMQ queue; end to end = DispatchedJob published -> JobSucceeded received
   from the results queue (so it includes RabbitMQ, the PNG encode, the S3 upload and
   the publisher confirms).
4. Raw and hot worker runs alternate, so both see the same machine load. Then the first
   image from each tier: cold (empty cache dir), warm (evicted from memory), hot.

Writes bench/results/worker.md. Run: `make bench-worker` (needs `make up-infra`).
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import torch
from aio_pika.abc import AbstractIncomingMessage
from diffusers import StableDiffusionPipeline

from diffleet_core.broker import Broker
from diffleet_core.messages import RESULT_EVENT, DispatchedJob, JobRef, JobSucceeded, ModelRef
from diffleet_core.queues import Topology
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.settings import get_settings
from diffleet_worker.config import WorkerSettings
from diffleet_worker.device import DevicePolicy, configure_torch
from diffleet_worker.diffusers_runner import DiffusersRunner
from diffleet_worker.pipelines.common import generators
from diffleet_worker.samplers import scheduler_for
from diffleet_worker.service import WorkerService
from hack.models.provision import local_model
from hack.models.registry import describe, s3_client
from hack.models.registry import upload as upload_artifact

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "worker.md"
PROMPT = "a red circle"


def upload(folder: Path) -> ModelRef:
    """Uploads a diffusers folder to the models bucket, as `make models` does; its ModelRef."""
    artifact = describe(folder)
    bucket = get_settings().buckets.models
    source = upload_artifact(
        artifact, bucket, f"bench/bench-sd15/{artifact.digest[:12]}/", s3_client()
    )
    return ModelRef(
        namespace="bench",
        name="bench-sd15",
        source=source,
        format="diffusers",
        type="checkpoint",
        base_model="sd15",
        digest=artifact.digest,
    )


def spec(size: int, steps: int) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate(
        {"model": "bench-sd15", "prompt": PROMPT, "width": size, "height": size, "steps": steps}
    )


class RawPipeline:
    """The baseline: the pipeline call alone, as a diffusers user would make it."""

    def __init__(self, folder: Path, policy: DevicePolicy, job: GenerationJobSpec) -> None:
        pipe = StableDiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            folder, dtype=policy.dtype, local_files_only=True, use_safetensors=True
        )
        self.pipe = policy.prepare(pipe)
        self.pipe.scheduler = scheduler_for(job.sampler, self.pipe.scheduler.config)
        self.job = job

    def seconds(self, seed: int) -> float:
        job = self.job
        started = time.perf_counter()
        self.pipe(
            prompt=job.prompt,
            width=job.width,
            height=job.height,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance_scale,
            generator=generators([seed]),
        )
        return time.perf_counter() - started


class WorkerHarness:
    """A worker in this process, and a client that sends it orders and awaits results."""

    def __init__(self, broker: Broker, runner: DiffusersRunner, settings: WorkerSettings) -> None:
        self.broker = broker
        self.runner = runner
        self.service = WorkerService(settings, broker, runner)
        self.worker_id = settings.worker_id
        self.waiting: dict[str, asyncio.Future[JobSucceeded]] = {}

    async def start(self) -> None:
        await self.service.start()
        await self.broker.consume(self.broker.topology.results_queue, self.on_result, prefetch=10)

    async def on_result(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        event = RESULT_EVENT.validate_json(message.body)
        future = self.waiting.get(event.job.uid)
        if isinstance(event, JobSucceeded) and future is not None and not future.done():
            future.set_result(event)
        elif event.event == "failed" and future is not None:
            future.set_exception(RuntimeError(f"job failed: {event}"))

    async def seconds(self, model: ModelRef, job: GenerationJobSpec, seed: int) -> float:
        uid = str(uuid.uuid4())
        order = DispatchedJob(
            job=JobRef(uid=uid, namespace="bench", name=f"bench-{uid[:8]}", attempt=1),
            spec=job,
            seed=seed,
            model=model,
            output_bucket=get_settings().buckets.outputs,
            deadline=datetime.now(UTC) + timedelta(minutes=30),
        )
        done = asyncio.get_running_loop().create_future()
        self.waiting[uid] = done
        started = time.perf_counter()
        await self.broker.publish_to_queue(
            self.broker.topology.worker_queue(self.worker_id), order, f"{uid}/1"
        )
        await asyncio.wait_for(done, timeout=600)
        return time.perf_counter() - started


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    folder = local_model("bench-sd15").path
    model = upload(folder)
    job = spec(args.size, args.steps)
    cache = Path(tempfile.mkdtemp(prefix="diffleet-bench-cache-"))
    settings = WorkerSettings(
        worker_id=f"bench-{uuid.uuid4().hex[:6]}",
        cache_dir=cache,
        threads=args.threads,
        preview_every_steps=5,
    )
    runner = DiffusersRunner.build(settings, boto3.client("s3"))
    topology = Topology(prefix=f"bench-{uuid.uuid4().hex[:6]}")
    broker = await Broker.connect(get_settings().amqp_url, topology, 10)
    await broker.declare()
    harness = WorkerHarness(broker, runner, settings)
    await harness.start()
    try:
        cold = await harness.seconds(model, job, seed=0)
        runner.store.evict_all()
        warm = await harness.seconds(model, job, seed=0)
        hot_first = await harness.seconds(model, job, seed=0)
        raw = await asyncio.to_thread(RawPipeline, folder, runner.policy, job)
        # In a thread, like the worker's runs: the event loop keeps serving RabbitMQ.
        await asyncio.to_thread(raw.seconds, 0)  # warm-up, as the worker's first runs were
        raws, ends = [], []
        for seed in range(1, args.repeats + 1):
            raws.append(await asyncio.to_thread(raw.seconds, seed))
            ends.append(await harness.seconds(model, job, seed))
    finally:
        await broker.close()
    return {
        "cold": cold,
        "warm": warm,
        "hot": hot_first,
        "raw": statistics.median(raws),
        "end_to_end": statistics.median(ends),
        "raws": raws,
        "ends": ends,
        "parameters": sum(p.numel() for p in raw.pipe.unet.parameters()),
        "policy": runner.policy.describe(),
        "threads": torch.get_num_threads(),
    }


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    ratio = figures["end_to_end"] / figures["raw"]
    load = os.getloadavg()
    return f"""# Worker benchmark

`make bench-worker` (bench/worker.py), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on this
machine's CPU ({figures["policy"]}, {figures["threads"]} torch threads). Load average at
the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min; 2 cores).

Model bench-sd15: UNet block channels 96/192/384/384, {figures["parameters"] / 1e6:.1f}M UNet
parameters. Job: {args.size}x{args.size}, {args.steps} steps, euler_a, one image.

| measure | seconds |
|---|---|
| raw pipeline call (median of {args.repeats}) | {figures["raw"]:.3f} |
| worker end to end, hot (median of {args.repeats}) | {figures["end_to_end"]:.3f} |
| **ratio end to end / raw** (target <= 1.05) | **{ratio:.3f}** |
| first image, cold (download + load + run) | {figures["cold"]:.3f} |
| first image, warm (verify + load from disk + run) | {figures["warm"]:.3f} |
| first image, hot | {figures["hot"]:.3f} |

Raw runs: {", ".join(f"{s:.3f}" for s in figures["raws"])}

End-to-end runs: {", ".join(f"{s:.3f}" for s in figures["ends"])}

End to end is the time from publishing the DispatchedJob to receiving its JobSucceeded:
RabbitMQ both ways, the input checks, the step callbacks (progress messages, a preview
every 5 steps), PNG encoding with the parameters chunk, the S3 upload and the publisher
confirms. Raw and worker runs alternate so both see the same load.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_torch(args.threads, deterministic=True)
    figures = asyncio.run(measure(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report(figures, args))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
