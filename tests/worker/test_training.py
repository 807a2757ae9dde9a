"""The worker's LoRA trainer (issue 20) on micro-shapes, on the CPU in fp32, with the
stack's MinIO for the dataset, the checkpoints, the validation images and the result.

The dataset is micro-shapes' world in blue, captioned with a word micro-shapes never
read ("a zorp circle"), which it draws green. Blue, not a colour micro-shapes never
draws (yellow): its VAE was trained on red, green and blue only and decodes a yellow
latent as green (hue about 115 degrees), so no LoRA of its UNet could draw yellow. The
text encoder is trained too: micro-shapes hears the caption mostly pooled into its timestep
embedding, which adapters on the UNet's attention do not reach.

The runs are shared by the tests (module-scoped): small runs for the file, its
checkpoints, determinism, a stop and a kill. A long run, its falling loss and the colour
its LoRA gives are in tests/operator/test_training_on_cpu.py, through the operator.
"""

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
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

BUCKETS = Buckets()
BLUE = (30, 30, 220)
PROMPT = f"a {NEW_WORD} circle"
NAMESPACE = "tests"
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
def small_run(s3: Any, base: Path, examples: list[Example]) -> tuple[Training, TrainingResult]:
    run = training(s3, base, examples, **SMALL)
    result = run.run()
    per_step = result.cpu_seconds / result.steps_run
    print(f"\nsmall run: {result.steps_run} steps, {per_step:.3f} CPU s/step (with checkpoints)")
    return run, result


def test_the_lora_file_records_the_training(
    small_run: tuple[Training, TrainingResult], tmp_path: Path
) -> None:
    run, result = small_run
    data = run.lora_bytes(result)
    assert result.lora is not None
    assert result.lora.sha256 == hashlib.sha256(data).hexdigest()
    (tmp_path / "zorp.safetensors").write_bytes(data)
    with safe_open(tmp_path / "zorp.safetensors", framework="pt") as lora:
        metadata = lora.metadata()
        keys = list(lora.keys())
    assert {
        "ss_network_dim": "4",
        "ss_network_alpha": "4",
        "ss_learning_rate": "0.001",
        "ss_max_train_steps": "24",
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
    small_run: tuple[Training, TrainingResult],
) -> None:
    run, result = small_run
    prefix = training_prefix(NAMESPACE, "zorp", run.uid)
    steps = ("000008", "000016", "000024")
    assert run.keys(prefix) == [
        *(f"checkpoints/{step}.safetensors" for step in steps),
        *(f"validation/{step}/0.png" for step in steps),
    ]
    assert [location.uri for location in result.validation_images] == [
        f"s3://{BUCKETS.outputs}/{prefix}validation/{step}/0.png" for step in steps
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
