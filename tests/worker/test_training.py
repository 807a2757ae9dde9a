"""The worker's trainers (issue 20), LoRA and textual inversion, on micro-shapes, on
the CPU in fp32, with the stack's MinIO for the dataset, the checkpoints, the validation
images and the result.

The dataset is micro-shapes' world in blue, captioned with a word micro-shapes never
read ("a zorp circle"), which it draws green. Blue, not a colour micro-shapes never
draws (yellow): its VAE was trained on red, green and blue only and decodes a yellow
latent as green (hue about 115 degrees), so no LoRA of its UNet could draw yellow. The
text encoder is trained too: micro-shapes hears the caption mostly pooled into its timestep
embedding, which adapters on the UNet's attention do not reach.

The runs are shared by the tests (module-scoped): small runs for the file, its
checkpoints, determinism, a stop and a kill. A long run, its falling loss and the colour
its LoRA gives are in tests/operator/test_training_on_cpu.py, through the operator.

Textual inversion learns one token's embedding (named after the output ModelCache) from
the same dataset, its captions' "zorp" replaced by the token: its run shows the vector
moving, nothing else changing, the file loading as the worker's embeddings load it,
determinism through a stop, and (printed) how far it moves "a <token> circle" to blue.
"""

import hashlib
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
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from diffleet_core.datasets import DatasetLimits
from diffleet_core.resources.training_job import TrainingJobSpec
from diffleet_core.settings import Buckets
from diffleet_core.storage import checkpoints_prefix, training_prefix
from diffleet_worker.training.dataset import Example, read_dataset
from diffleet_worker.training.embedding import placeholder_mean
from diffleet_worker.training.store import TrainingStore
from diffleet_worker.training.trainer import TrainingResult, load_base, trainer_for
from hack.models.datasets import NEW_WORD, shapes_dataset, upload_dataset
from hack.models.registry import RegisteredModel
from hack.models.shapes import HUES, hue_degrees

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
    pipe: Any = None  # the last run's, as its training left it

    @property
    def store(self) -> TrainingStore:
        return TrainingStore(self.s3, BUCKETS.outputs, BUCKETS.models, NAMESPACE, "zorp", self.uid)

    def run(
        self,
        stop_at: int | None = None,
        on_progress: Callable[[int, float], None] = lambda step, loss: None,
    ) -> TrainingResult:
        self.pipe = load_base(self.base, torch.device("cpu"))
        trainer = trainer_for(self.spec, SEED, self.pipe, self.examples, self.store)
        steps: list[int] = []

        def progress(step: int, loss: float) -> None:
            steps.append(step)
            on_progress(step, loss)

        return trainer.run(lambda: stop_at is not None and stop_at in steps, progress)

    def output_bytes(self, result: TrainingResult) -> bytes:
        assert result.output is not None
        location = result.output.location
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
    data = run.output_bytes(result)
    assert result.output is not None
    assert result.output.sha256 == hashlib.sha256(data).hexdigest()
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
    assert first.output is not None
    assert second.output is not None
    assert second.output.sha256 == first.output.sha256


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
    # A stop's checkpoint renders no validation image: the slot goes back sooner.
    validation = training_prefix(NAMESPACE, "zorp", run.uid) + "validation/"
    assert run.keys(validation) == ["000008/0.png"]
    resumed = run.run()
    assert (resumed.finished, resumed.resumed_from, resumed.steps_run) == (True, 13, 11)
    assert resumed.output is not None
    assert uninterrupted.output is not None
    assert resumed.output.sha256 == uninterrupted.output.sha256


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
    assert resumed.output is not None
    assert uninterrupted.output is not None
    assert resumed.output.sha256 == uninterrupted.output.sha256


# Textual inversion: the token is the output ModelCache's name.
TOKEN = "zorp-embedding"  # noqa: S105 - a word of the prompts, not a secret
INVERSION = {
    "method": "textual-inversion",
    "placeholder": NEW_WORD,
    "output": {"name": TOKEN},
    "steps": 48,
    "learningRate": 5e-3,
    "batchSize": 4,
    "checkpointEverySteps": 16,
    "validationPrompts": [f"a {TOKEN} circle"],
}


@pytest.fixture(scope="module")
def inversion_run(s3: Any, base: Path, examples: list[Example]) -> tuple[Training, TrainingResult]:
    run = training(s3, base, examples, **INVERSION)
    result = run.run()
    per_step = result.cpu_seconds / result.steps_run
    print(
        f"\ninversion run: {result.steps_run} steps, {per_step:.3f} CPU s/step (with checkpoints)"
    )
    return run, result


def embedding_table(pipe: Any) -> torch.Tensor:
    weight: torch.Tensor = pipe.text_encoder.get_input_embeddings().weight
    return weight.detach()


def test_inversion_trains_the_new_token_alone(
    inversion_run: tuple[Training, TrainingResult], tmp_path: Path
) -> None:
    """The file holds one vector, the token's; it moved from its start (the mean of the
    placeholder's own tokens), and every weight of the pipeline is the base's."""
    run, result = inversion_run
    (tmp_path / "zorp.safetensors").write_bytes(run.output_bytes(result))
    vectors = load_file(tmp_path / "zorp.safetensors")
    fresh = load_base(run.base, torch.device("cpu"))
    start = placeholder_mean(fresh.tokenizer, embedding_table(fresh), NEW_WORD)
    assert list(vectors) == [TOKEN]
    assert vectors[TOKEN].shape == (1, start.shape[0])
    moved = float((vectors[TOKEN][0] - start).norm() / start.norm())
    quarter = len(result.losses) // 4
    early, late = np.mean(result.losses[:quarter]), np.mean(result.losses[-quarter:])
    print(f"\nthe vector moved {moved:.3f} of its norm; loss {early:.4f} -> {late:.4f}")
    assert moved > 0.01
    trained = run.pipe
    words = embedding_table(fresh).shape[0]
    assert torch.equal(embedding_table(trained)[:words], embedding_table(fresh))
    for name in ("unet", "vae", "text_encoder"):
        base_state = getattr(fresh, name).state_dict()
        for key, value in getattr(trained, name).state_dict().items():
            if key.endswith("token_embedding.weight"):
                continue  # compared above: the base's rows, and the token's
            assert torch.equal(value, base_state[key]), f"{name}.{key}"


def test_inversion_file_loads_as_the_worker_loads_embeddings(
    inversion_run: tuple[Training, TrainingResult], tmp_path: Path
) -> None:
    """`load_textual_inversion` under the token, and a prompt that uses it draws the
    dataset's blue: "a zorp circle" without it is drawn green (micro-shapes' own guess)."""
    run, result = inversion_run
    path = tmp_path / "zorp.safetensors"
    path.write_bytes(run.output_bytes(result))
    with safe_open(path, framework="pt") as embedding:
        metadata = embedding.metadata()
    assert {
        "ss_seed": str(SEED),
        "ss_max_train_steps": "48",
        "ss_learning_rate": "0.005",
        "ss_resolution": "(64, 64)",
        "ss_num_train_images": "16",
        "ss_sd_model_name": "micro-shapes",
        "ss_base_model_version": "sd_v1",
        "diffleet.method": "textual-inversion",
        "diffleet.placeholder": NEW_WORD,
    }.items() <= metadata.items()
    pipe = load_base(run.base, torch.device("cpu"))
    without = hue_distance_from_blue(pipe, f"a {NEW_WORD} circle")
    pipe.load_textual_inversion(load_file(path), token=TOKEN)
    with_embedding = hue_distance_from_blue(pipe, f"a {TOKEN} circle")
    print(
        f"\nhue distance from blue: {without:.1f} degrees for 'a {NEW_WORD} circle' without the"
        f" embedding, {with_embedding:.1f} for 'a {TOKEN} circle' with it"
    )
    assert with_embedding < without - 45


def hue_distance_from_blue(pipe: Any, prompt: str) -> float:
    """Mean distance in degrees from blue of the coloured pixels of the prompt's images,
    one per judge seed."""
    distances: list[float] = []
    with torch.no_grad():
        for seed in JUDGE_SEEDS:
            image: Image.Image = pipe(
                prompt,
                height=64,
                width=64,
                num_inference_steps=20,
                generator=torch.Generator().manual_seed(seed),
            ).images[0]
            pixels = np.asarray(image.convert("RGB"), np.float32).reshape(-1, 3)
            coloured = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) >= 60]
            distances.extend(np.abs((hue_degrees(coloured) - HUES["blue"] + 180) % 360 - 180))
    return float(np.mean(distances))


def test_a_stopped_inversion_resumes_to_the_same_embedding(
    inversion_run: tuple[Training, TrainingResult], s3: Any, base: Path, examples: list[Example]
) -> None:
    """Stopped at step 21 (between checkpoints 16 and 32) and resumed: the same file as
    the run that went through, with the same seed."""
    _, uninterrupted = inversion_run
    run = training(s3, base, examples, **INVERSION)
    stopped = run.run(stop_at=21)
    assert (stopped.finished, stopped.step) == (False, 21)
    assert run.keys(checkpoints_prefix(NAMESPACE, "zorp", run.uid)) == [
        "000016.safetensors",
        "000021.safetensors",
    ]
    resumed = run.run()
    assert (resumed.finished, resumed.resumed_from, resumed.steps_run) == (True, 21, 27)
    assert resumed.output is not None
    assert uninterrupted.output is not None
    assert resumed.output.sha256 == uninterrupted.output.sha256
