"""The simulated worker's hot tier: at most sim_hot_slots checkpoints, evictions by the
order's keep_hot, every load counted; a video job's placeholder clip."""

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av

from diffleet_core.messages import DispatchedJob, JobRef, ModelRef
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_worker import metrics
from diffleet_worker.config import WorkerSettings
from diffleet_worker.simulated import SimulatedRunner


class FakeS3:
    def put_object(self, **_: Any) -> None:
        pass


def model(name: str) -> ModelRef:
    return ModelRef(
        namespace="ns",
        name=name,
        source=f"s3://models/{name}",
        format="safetensors",
        type="checkpoint",
        base_model="sd15",
        digest=name,
    )


def order(uid: str, checkpoint: str, keep_hot: list[str] | None = None) -> DispatchedJob:
    return DispatchedJob(
        job=JobRef(uid=uid, namespace="ns", name=uid, attempt=1),
        spec=GenerationJobSpec.model_validate(
            {"model": checkpoint, "prompt": "a red circle", "steps": 1, "width": 64, "height": 64}
        ),
        seed=1,
        model=model(checkpoint),
        output_bucket="out",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        keep_hot=keep_hot or [],
    )


def runner(tmp_path: Path, slots: int) -> SimulatedRunner:
    settings = WorkerSettings(
        worker_id="w",
        sim_hot_slots=slots,
        sim_step_seconds=0,
        sim_load_seconds=0,
        sim_warm_load_seconds=0,
        sim_record_path=tmp_path / "record.jsonl",
    )
    return SimulatedRunner(settings, FakeS3())


async def run_all(sim: SimulatedRunner, *orders: DispatchedJob) -> None:
    async def on_step(*_: Any) -> None:
        pass

    for each in orders:
        await sim.run(each, asyncio.Event(), on_step)


def loads(tier: str) -> float:
    return float(metrics.CHECKPOINT_LOADS.labels(tier)._value.get())


def test_the_hot_tier_holds_its_slots_and_evicts_what_the_operator_does_not_keep(
    tmp_path: Path,
) -> None:
    sim = runner(tmp_path, slots=2)
    cold, warm = loads("cold"), loads("warm")

    asyncio.run(run_all(sim, order("1", "a"), order("2", "b"), order("3", "c", keep_hot=["a"])))
    assert sim.hot_models() == ["c", "a"]  # b, more recent than a, went: a is kept
    assert sim.hot_slots() == 2

    asyncio.run(run_all(sim, order("4", "a"), order("5", "b")))
    assert sim.hot_models() == ["b", "a"]  # plain LRU without keep_hot: c went
    assert loads("cold") - cold == 3  # a, b, c from S3
    assert loads("warm") - warm == 1  # b again, from disk
    record = (tmp_path / "record.jsonl").read_text().splitlines()
    assert [json.loads(line)["load"] for line in record] == ["cold", "cold", "cold", "hot", "warm"]


def test_no_slots_means_unbounded(tmp_path: Path) -> None:
    sim = runner(tmp_path, slots=0)
    asyncio.run(run_all(sim, *(order(str(i), f"m{i}") for i in range(5))))
    assert len(sim.hot_models()) == 5
    assert sim.hot_slots() is None


class KeptS3:
    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}

    def put_object(self, Key: str, Body: bytes, **_: Any) -> None:  # noqa: N803 - boto3's names
        self.bodies[Key] = Body


def test_a_video_job_gets_a_placeholder_clip_of_its_frames_at_its_fps(tmp_path: Path) -> None:
    s3 = KeptS3()
    sim = SimulatedRunner(runner(tmp_path, slots=0).settings, s3)
    spec = {"mode": "txt2vid", "prompt": "a red circle", "steps": 1, "width": 72, "height": 64}
    video = {"frames": 6, "fps": 3, "format": "mp4", "motionAdapter": "m"}
    clip = order("clip", "sd").model_copy(
        update={"spec": GenerationJobSpec.model_validate(spec | {"model": "sd", "video": video})}
    )

    async def on_step(*_: Any) -> None:
        pass

    output = asyncio.run(sim.run(clip, asyncio.Event(), on_step)).outputs[0]
    assert (output.format, output.frames, output.fps, output.duration_seconds) == ("mp4", 6, 3, 2)
    assert output.uri.endswith("/0.mp4")
    with av.open(io.BytesIO(s3.bodies[output.uri.split("/", 3)[3]]), mode="r") as container:
        stream = container.streams.video[0]
        assert (stream.frames, float(stream.average_rate or 0)) == (6, 3.0)
        assert (stream.width, stream.height) == (output.width, output.height) == (8, 8)
