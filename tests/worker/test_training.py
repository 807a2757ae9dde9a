"""The worker's LoRA trainer (issue 20) on micro-shapes, on the CPU in fp32, with the
stack's MinIO for the dataset, the checkpoints, the validation images and the result.

The dataset is micro-shapes' world in blue, captioned with a word micro-shapes never
read ("a zorp circle"), which it draws green. Blue, not a colour micro-shapes never
draws (yellow): its VAE was trained on red, green and blue only and decodes a yellow
latent as green (hue about 115 degrees), so no LoRA of its UNet could draw yellow. The
text encoder is trained too: micro-shapes hears the caption mostly pooled into its timestep
embedding, which adapters on the UNet's attention do not reach.

The runs are shared by the tests (module-scoped): one long run for the loss and the
colour, small runs for determinism, a stop and a kill.
"""

import hashlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import torch
from botocore.config import Config
from safetensors import safe_open

from diffleet_core.datasets import DatasetLimits
from diffleet_core.resources.training_job import TrainingJobSpec
from diffleet_core.settings import Buckets
from diffleet_core.storage import checkpoints_prefix, training_prefix
from diffleet_worker.training.dataset import Example, read_dataset
from diffleet_worker.training.store import TrainingStore
from diffleet_worker.training.trainer import LoraTrainer, TrainingResult, load_base
from hack.models.datasets import NEW_WORD, shapes_dataset, upload_dataset
from hack.models.registry import RegisteredModel
from hack.models.shapes import HUES, hue_degrees

BUCKETS = Buckets()
BLUE = (30, 30, 220)
PROMPT = f"a {NEW_WORD} circle"
NAMESPACE = "tests"
# The long run: the default learning rate, enough steps for the colour (~45 s).
LONG = {
    "rank": 8,
    "steps": 300,
    "learningRate": 1e-4,
    "batchSize": 8,
    "trainTextEncoder": True,
    "checkpointEverySteps": 100,
}
# The small runs: checkpoints often, so stopping and killing fall between them.
SMALL = {
    "rank": 4,
    "steps": 24,
    "learningRate": 1e-3,
    "batchSize": 4,
    "trainTextEncoder": True,
    "checkpointEverySteps": 8,
}
SEED = 7
JUDGE_SEEDS = (1, 2, 3, 4)


class KilledError(Exception):
    """Stands for a worker killed outright: the run ends between two checkpoints."""


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One thread: the machine is shared, and contending threads are slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def s3(local_stack: dict[str, str]) -> Any:
    return boto3.client("s3", config=Config(connect_timeout=5, read_timeout=60))


@pytest.fixture(scope="module")
def base(models: dict[str, RegisteredModel]) -> Path:
    return models["micro-shapes"].path


@pytest.fixture(scope="module")
def examples(s3: Any) -> list[Example]:
    """Sixteen blue shapes uploaded as a dataset folder and read back as the worker does."""
    prefix = f"{NAMESPACE}/datasets/zorp-{uuid.uuid4().hex[:8]}/"
    uri = upload_dataset(s3, BUCKETS.uploads, prefix, shapes_dataset(BLUE, NEW_WORD, 16, 0))
    return read_dataset(s3, uri, DatasetLimits())


@dataclass
class Training:
    """Runs a spec under one uid (one training), each run a fresh worker process would
    make: the base model loaded anew, the trainer resuming from the store."""

    s3: Any
    base: Path
    examples: list[Example]
    spec: TrainingJobSpec
    uid: str

    @property
    def store(self) -> TrainingStore:
        return TrainingStore(self.s3, BUCKETS.outputs, BUCKETS.models, NAMESPACE, "zorp", self.uid)

    def run(
        self,
        stop_at: int | None = None,
        on_progress: Callable[[int, float], None] = lambda step, loss: None,
    ) -> TrainingResult:
        pipe = load_base(self.base, torch.device("cpu"))
        trainer = LoraTrainer(self.spec, SEED, pipe, self.examples, self.store)
        steps: list[int] = []

        def progress(step: int, loss: float) -> None:
            steps.append(step)
            on_progress(step, loss)

        return trainer.run(lambda: stop_at is not None and stop_at in steps, progress)

    def lora_bytes(self, result: TrainingResult) -> bytes:
        assert result.lora is not None
        location = result.lora.location
        body: bytes = self.s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
        return body

    def keys(self, prefix: str) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=BUCKETS.outputs, Prefix=prefix)
        return [item["Key"].removeprefix(prefix) for item in listed.get("Contents", [])]


def training(s3: Any, base: Path, examples: list[Example], **fields: Any) -> Training:
    spec = TrainingJobSpec.model_validate(
        {
            "baseModel": "micro-shapes",
            "dataset": f"s3://{BUCKETS.uploads}/{NAMESPACE}/datasets/zorp/",
            "output": {"name": "zorp-lora"},
            "resolution": 64,
            "seed": SEED,
            "validationPrompts": [PROMPT],
            **fields,
        }
    )
    return Training(s3, base, examples, spec, uid=uuid.uuid4().hex)


@pytest.fixture(scope="module")
def long_run(s3: Any, base: Path, examples: list[Example]) -> tuple[Training, TrainingResult]:
    run = training(s3, base, examples, **LONG)
    started = time.monotonic()
    result = run.run()
    wall = time.monotonic() - started
    curve = [round(float(np.mean(result.losses[i : i + 20])), 4) for i in range(0, 300, 20)]
    print(
        f"\nlong run: {result.steps_run} steps, {result.cpu_seconds / result.steps_run:.3f}"
        f" CPU s/step, {wall:.1f} s wall; mean loss of each 20 steps: {curve}"
    )
    return run, result


@pytest.fixture(scope="module")
def small_run(s3: Any, base: Path, examples: list[Example]) -> tuple[Training, TrainingResult]:
    run = training(s3, base, examples, **SMALL)
    return run, run.run()


def hue_distance(pipe: Any, hue: float) -> float:
    """Mean distance in degrees from `hue` of the coloured pixels of PROMPT's pictures."""
    distances: list[float] = []
    for seed in JUDGE_SEEDS:
        image = pipe(
            PROMPT,
            height=64,
            width=64,
            num_inference_steps=20,
            generator=torch.Generator().manual_seed(seed),
        ).images[0]
        pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
        coloured = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) >= 60]
        distances.extend(np.abs((hue_degrees(coloured) - hue + 180) % 360 - 180))
    return float(np.mean(distances))


def test_the_loss_falls(long_run: tuple[Training, TrainingResult]) -> None:
    _, result = long_run
    assert result.finished
    assert result.steps_run == LONG["steps"]
    first, last = np.mean(result.losses[:20]), np.mean(result.losses[-20:])
    print(f"\nloss: first 20 steps {first:.4f}, last 20 steps {last:.4f}")
    assert last < first


def test_the_lora_draws_the_new_word_in_the_dataset_colour(
    long_run: tuple[Training, TrainingResult], base: Path
) -> None:
    """The LoRA file, loaded as the worker loads LoRAs, moves "a zorp circle" to blue."""
    run, result = long_run
    pipe = load_base(base, torch.device("cpu"))
    with torch.no_grad():
        without = hue_distance(pipe, HUES["blue"])
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "zorp.safetensors").write_bytes(run.lora_bytes(result))
            pipe.load_lora_weights(scratch, weight_name="zorp.safetensors", adapter_name="zorp")
        with_lora = hue_distance(pipe, HUES["blue"])
    print(f"\nhue distance from blue: {without:.1f} degrees without, {with_lora:.1f} with")
    assert with_lora < without - 25


def test_the_lora_file_records_the_training(
    long_run: tuple[Training, TrainingResult], tmp_path: Path
) -> None:
    run, result = long_run
    data = run.lora_bytes(result)
    assert result.lora is not None
    assert result.lora.sha256 == hashlib.sha256(data).hexdigest()
    (tmp_path / "zorp.safetensors").write_bytes(data)
    with safe_open(tmp_path / "zorp.safetensors", framework="pt") as lora:
        metadata = lora.metadata()
        keys = list(lora.keys())
    assert {
        "ss_network_dim": "8",
        "ss_network_alpha": "8",
        "ss_learning_rate": "0.0001",
        "ss_max_train_steps": "300",
        "ss_seed": str(SEED),
        "ss_resolution": "(64, 64)",
        "ss_sd_model_name": "micro-shapes",
        "ss_num_train_images": "16",
        "ss_base_model_version": "sd_v1",
    }.items() <= metadata.items()
    assert any(key.startswith("unet.") and "to_q.lora.down" in key for key in keys)
    assert any(
        key.startswith("text_encoder.") and "q_proj.lora_linear_layer.down" in key for key in keys
    )


def test_checkpoints_and_validation_images_land_beside_each_other(
    long_run: tuple[Training, TrainingResult],
) -> None:
    run, result = long_run
    prefix = training_prefix(NAMESPACE, "zorp", run.uid)
    assert run.keys(prefix) == [
        "checkpoints/000100.safetensors",
        "checkpoints/000200.safetensors",
        "checkpoints/000300.safetensors",
        "validation/000100/0.png",
        "validation/000200/0.png",
        "validation/000300/0.png",
    ]
    assert [location.uri for location in result.validation_images] == [
        f"s3://{BUCKETS.outputs}/{prefix}validation/000100/0.png",
        f"s3://{BUCKETS.outputs}/{prefix}validation/000200/0.png",
        f"s3://{BUCKETS.outputs}/{prefix}validation/000300/0.png",
    ]


def test_the_same_seed_gives_the_same_lora(
    small_run: tuple[Training, TrainingResult], s3: Any, base: Path, examples: list[Example]
) -> None:
    _, first = small_run
    second = training(s3, base, examples, **SMALL).run()
    assert first.lora is not None
    assert second.lora is not None
    assert second.lora.sha256 == first.lora.sha256


def test_a_stopped_training_resumes_to_the_same_lora(
    small_run: tuple[Training, TrainingResult], s3: Any, base: Path, examples: list[Example]
) -> None:
    """Stopped at step 13 (between checkpoints 8 and 16), it saves a checkpoint of step
    13 and resumes there: no step is run twice."""
    _, uninterrupted = small_run
    run = training(s3, base, examples, **SMALL)
    stopped = run.run(stop_at=13)
    assert (stopped.finished, stopped.step, stopped.steps_run) == (False, 13, 13)
    assert run.keys(checkpoints_prefix(NAMESPACE, "zorp", run.uid)) == [
        "000008.safetensors",
        "000013.safetensors",
    ]
    resumed = run.run()
    assert (resumed.finished, resumed.resumed_from, resumed.steps_run) == (True, 13, 11)
    assert resumed.lora is not None
    assert uninterrupted.lora is not None
    assert resumed.lora.sha256 == uninterrupted.lora.sha256


def test_a_killed_training_loses_at_most_a_checkpoint_interval(
    small_run: tuple[Training, TrainingResult], s3: Any, base: Path, examples: list[Example]
) -> None:
    """Killed after step 19, it resumes from the checkpoint of step 16: 27 steps run in
    all, at most steps + checkpointEverySteps, and the same LoRA."""
    _, uninterrupted = small_run
    run = training(s3, base, examples, **SMALL)

    def killed_after_19(step: int, loss: float) -> None:
        if step == 19:
            raise KilledError

    with pytest.raises(KilledError):
        run.run(on_progress=killed_after_19)
    resumed = run.run()
    assert (resumed.finished, resumed.resumed_from) == (True, 16)
    total = 19 + resumed.steps_run
    assert total <= SMALL["steps"] + SMALL["checkpointEverySteps"]
    assert resumed.lora is not None
    assert uninterrupted.lora is not None
    assert resumed.lora.sha256 == uninterrupted.lora.sha256
