"""The training loop: a TrainingJobSpec run on a Stable Diffusion 1.5 checkpoint.

Each step (as diffusers' train_text_to_image_lora.py and textual_inversion.py): a batch
of examples, a latent sampled from the VAE's encoding of each, noise at a random
timestep, and the MSE between the UNet's prediction and the scheduler's target (the
noise, or the velocity for a v-prediction model); AdamW on the trained parameters alone
(a method's: LoRA adapters, or a new token's embedding), at a constant rate.

Determinism on the CPU (fp32): every draw of a step derives from (seed, step), the
modules stay in eval mode (no dropout draws from torch's global generator), and the
trained parameters' initial values come from the seed (or from no draw at all). So a
seed gives one file, and a training stopped and resumed from its checkpoint gives the
same file as one that ran through. Checkpoints are saved every `checkpoint_every_steps`
and when `should_stop` says so at a step boundary; a training resumes from the latest
checkpoint in its store.
"""

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from diffusers import DDPMScheduler, StableDiffusionPipeline

from diffleet_core.resources.training_job import TrainingJobSpec, TrainingMethod
from diffleet_core.storage import S3Location
from diffleet_worker.training import batches, checkpoints, embedding, lora, output, validation
from diffleet_worker.training.dataset import Example
from diffleet_worker.training.store import TrainingStore

# Gradients are clipped to this norm, as diffusers' training scripts do by default.
MAX_GRAD_NORM = 1.0
# Images encoded by the VAE at once when the trainer starts.
ENCODE_CHUNK = 8

StopCheck = Callable[[], bool]
ProgressCallback = Callable[[int, float], None]
# Called when the steps begin, with the step resumed from (0: none).
StartCallback = Callable[[int], None]
# Called after each checkpoint is saved: its step, its location, the validation images
# rendered with it.
CheckpointCallback = Callable[[int, S3Location, list[S3Location]], None]


def load_base(path: Path, device: torch.device) -> Any:
    """A Stable Diffusion 1.5 checkpoint (a diffusers folder or one file) in fp32, the
    trainer's own copy: training changes its UNet, so never a pipeline the worker's
    hot tier shares with generation jobs."""
    options: dict[str, Any] = {
        "dtype": torch.float32,
        "safety_checker": None,
        "requires_safety_checker": False,
    }
    if path.is_dir():
        pipe = StableDiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            path, local_files_only=True, use_safetensors=True, **options
        )
    else:
        pipe = StableDiffusionPipeline.from_single_file(path, local_files_only=True, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass(frozen=True)
class TrainedOutput:
    """The file a finished training wrote: a LoRA, or an embedding."""

    location: S3Location
    sha256: str
    size_bytes: int


@dataclass
class TrainingResult:
    """What one call of `run` did: `finished` with its file, or stopped at `step` with a
    checkpoint of that step saved."""

    finished: bool
    resumed_from: int
    step: int
    losses: list[float] = field(default_factory=list)
    checkpoints: list[S3Location] = field(default_factory=list)
    validation_images: list[S3Location] = field(default_factory=list)
    output: TrainedOutput | None = None
    cpu_seconds: float = 0.0

    @property
    def steps_run(self) -> int:
        return len(self.losses)


class Trainer(ABC):
    """The steps, checkpoints, validation and result of every method; a method says
    which parameters train, what the captions become, how the text encoder's states
    of a batch are had, and what file the result is."""

    def __init__(
        self,
        spec: TrainingJobSpec,
        seed: int,
        pipe: Any,
        examples: Sequence[Example],
        store: TrainingStore,
    ) -> None:
        if not examples:
            raise ValueError("dataset: no examples to train on")
        self.spec, self.seed, self.pipe, self.store = spec, seed, pipe, store
        self.count = len(examples)
        for module in (pipe.unet, pipe.text_encoder, pipe.vae):
            module.requires_grad_(False)  # a method's own parameters alone train
        self.parameters = self._trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.parameters.values(), lr=spec.learning_rate)
        self.noise_schedule = DDPMScheduler.from_config(  # type: ignore[no-untyped-call]
            pipe.scheduler.config
        )
        self.device = pipe.device
        self.latent_mean, self.latent_std = self._encode_images(examples)
        self.caption_ids = self._tokenize(self._captions([e.caption for e in examples]))
        self.on_checkpoint: CheckpointCallback | None = None  # the current run's

    @abstractmethod
    def _trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Prepares the pipeline for the method; the parameters trained, by a stable
        name (the optimizer's order, and a checkpoint's keys)."""

    @abstractmethod
    def _caption_states(self, picked: list[int]) -> torch.Tensor:
        """The text encoder's states of the picked examples' captions."""

    @abstractmethod
    def _result_file(self) -> bytes:
        """The finished training's safetensors file."""

    def _captions(self, captions: list[str]) -> list[str]:
        """The captions as trained on; as written, unless a method says otherwise."""
        return captions

    @property
    def prediction_type(self) -> str:
        return str(self.noise_schedule.config.prediction_type)

    def run(
        self,
        should_stop: StopCheck,
        on_progress: ProgressCallback,
        *,
        on_start: StartCallback | None = None,
        on_checkpoint: CheckpointCallback | None = None,
    ) -> TrainingResult:
        """Trains from the latest checkpoint (or the start) to `spec.steps`, or until
        `should_stop` says so at a step boundary, when it saves a checkpoint and returns.
        The callbacks only observe: they change nothing the steps draw or compute."""
        latest = self.store.latest_checkpoint()
        if latest is not None:
            checkpoints.restore(latest, self.parameters, self.optimizer)
        start = latest.step if latest is not None else 0
        result = TrainingResult(finished=False, resumed_from=start, step=start)
        self.on_checkpoint = on_checkpoint
        if on_start is not None:
            on_start(start)
        cpu_started = time.process_time()
        for step in range(start, self.spec.steps):
            if should_stop():
                if step != start:  # the checkpoint it resumed from is this step's
                    # No validation images: the slot goes back a render sooner.
                    self._checkpoint(result, validate=False)
                break
            result.losses.append(self._step(step))
            result.step = step + 1
            on_progress(result.step, result.losses[-1])
            if result.step % self.spec.checkpoint_every_steps == 0:
                self._checkpoint(result)
        else:
            self._finish(result)
        result.cpu_seconds = time.process_time() - cpu_started
        return result

    def _step(self, step: int) -> float:
        generator = batches.step_generator(self.seed, step)
        picked = batches.indices(self.seed, step, self.spec.batch_size, self.count)
        mean, std = self.latent_mean[picked], self.latent_std[picked]
        latents = mean + std * self._randn(mean.shape, generator)
        latents = latents * self.pipe.vae.config.scaling_factor
        noise = self._randn(latents.shape, generator)
        timesteps = torch.randint(
            0, self.noise_schedule.config.num_train_timesteps, (len(picked),), generator=generator
        ).to(self.device)
        noisy = self.noise_schedule.add_noise(latents, noise, timesteps)
        if self.prediction_type == "v_prediction":
            target = self.noise_schedule.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        prediction = self.pipe.unet(noisy, timesteps, self._caption_states(picked)).sample
        loss = F.mse_loss(prediction.float(), target.float())
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(self.parameters.values(), MAX_GRAD_NORM)
        self.optimizer.step()
        return float(loss.item())

    def _randn(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        """Drawn on the CPU, whatever the device: the same draws everywhere."""
        return torch.randn(shape, generator=generator).to(self.device)

    def _checkpoint(self, result: TrainingResult, *, validate: bool = True) -> None:
        state = checkpoints.capture(result.step, self.parameters, self.optimizer)
        location = self.store.put_checkpoint(state)
        result.checkpoints.append(location)
        rendered = len(result.validation_images)
        if validate:
            self._validate(result)
        if self.on_checkpoint is not None:
            self.on_checkpoint(result.step, location, result.validation_images[rendered:])

    def _validate(self, result: TrainingResult) -> None:
        images = validation.render(
            self.pipe, self.spec.validation_prompts, self.seed, self.spec.resolution
        )
        for index, png in enumerate(images):
            result.validation_images.append(
                self.store.put_validation_image(result.step, index, png)
            )

    def _finish(self, result: TrainingResult) -> None:
        if result.step % self.spec.checkpoint_every_steps != 0:
            self._validate(result)  # else the last checkpoint rendered them
        data = self._result_file()
        location = self.store.put_output(self.spec.output.name, data)
        result.output = TrainedOutput(location, hashlib.sha256(data).hexdigest(), len(data))
        result.finished = True

    def _encode_images(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's latent distribution of every image (mean and standard deviation),
        computed once: each step samples from it with the step's generator."""
        means, stds = [], []
        with torch.no_grad():
            for first in range(0, len(examples), ENCODE_CHUNK):
                chunk = examples[first : first + ENCODE_CHUNK]
                pixels = batches.pixels(chunk, self.spec.resolution).to(self.device)
                distribution = self.pipe.vae.encode(pixels).latent_dist
                means.append(distribution.mean)
                stds.append(distribution.std)
        return torch.cat(means), torch.cat(stds)

    def _tokenize(self, captions: list[str]) -> torch.Tensor:
        tokenizer = self.pipe.tokenizer
        ids: torch.Tensor = tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return ids.to(self.device)

    def _encode_captions(self, picked: list[int]) -> torch.Tensor:
        states: torch.Tensor = self.pipe.text_encoder(self.caption_ids[picked])[0]
        return states


class LoraTrainer(Trainer):
    """A LoRA of the UNet's attention (and the text encoder's, with trainTextEncoder)."""

    def __init__(
        self,
        spec: TrainingJobSpec,
        seed: int,
        pipe: Any,
        examples: Sequence[Example],
        store: TrainingStore,
    ) -> None:
        super().__init__(spec, seed, pipe, examples, store)
        # A frozen text encoder's states of every caption, computed once.
        self.caption_states = None
        if not spec.train_text_encoder:
            with torch.no_grad():
                self.caption_states = self._encode_captions(list(range(self.count)))

    def _trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        lora.add_adapters(self.pipe, self.spec.rank, self.spec.train_text_encoder, self.seed)
        self.modules = lora.trained_modules(self.pipe, self.spec.train_text_encoder)
        return lora.trainable_parameters(self.modules)

    def _caption_states(self, picked: list[int]) -> torch.Tensor:
        if self.caption_states is not None:
            return self.caption_states[picked]
        return self._encode_captions(picked)

    def _result_file(self) -> bytes:
        meta = output.metadata(self.spec, self.seed, self.count, self.prediction_type)
        return output.lora_file(lora.lora_state_dict(self.modules), meta)


class TextualInversionTrainer(Trainer):
    """A new token's embedding (named output.name), the rest of the pipeline frozen."""

    def _trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        assert self.spec.placeholder is not None, "the spec's rules require it"
        self.token = embedding.LearnedToken(self.pipe, self.spec.output.name, self.spec.placeholder)
        return {embedding.PARAMETER: self.token.vector}

    def _captions(self, captions: list[str]) -> list[str]:
        assert self.spec.placeholder is not None, "the spec's rules require it"
        return embedding.token_captions(captions, self.spec.placeholder, self.spec.output.name)

    def _caption_states(self, picked: list[int]) -> torch.Tensor:
        return self._encode_captions(picked)

    def _result_file(self) -> bytes:
        meta = output.embedding_metadata(self.spec, self.seed, self.count, self.prediction_type)
        return output.lora_file(self.token.state_dict(), meta)


def trainer_for(
    spec: TrainingJobSpec, seed: int, pipe: Any, examples: Sequence[Example], store: TrainingStore
) -> Trainer:
    """The trainer of the spec's method."""
    if spec.method is TrainingMethod.TEXTUAL_INVERSION:
        return TextualInversionTrainer(spec, seed, pipe, examples, store)
    return LoraTrainer(spec, seed, pipe, examples, store)
