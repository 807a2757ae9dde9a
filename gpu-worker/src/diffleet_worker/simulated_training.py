"""A simulated training (diffleet-worker --simulate): the real protocol and storage keys
with a scripted step time instead of torch, so that the operator's scheduling,
preemption and resumption are tested in seconds.

The dataset is read and checked as the real worker reads it (its refusals are the
real ones). Each step takes `sim_training_step_seconds` and reports a loss that falls
with the step; a checkpoint every `checkpointEverySteps` (and at a stop) is a small
safetensors file at the real checkpoint key whose metadata holds the step, and a run
resumes from the highest one. Validation images are small PNGs at their real keys. The
LoRA is a valid safetensors file with no tensors, its metadata the spec's and the
seed's; a textual inversion's is a valid embedding (one zero vector under the token,
output.name, which the worker's embeddings load): the same training gives the same
bytes, as the real trainer does.
"""

import asyncio
import hashlib
import io
import json
import math
import struct
from typing import Any

from PIL import Image

from diffleet_core.datasets import DatasetLimits
from diffleet_core.messages import DispatchedTraining
from diffleet_core.resources.training_job import (
    TrainingCheckpoint,
    TrainingMethod,
    ValidationImage,
)
from diffleet_core.storage import (
    S3Location,
    checkpoint_key,
    checkpoints_prefix,
    trained_lora_key,
    validation_image_key,
)
from diffleet_worker.runner import TrainedFile, TrainingHooks, TrainingOutcome
from diffleet_worker.training.dataset import read_dataset

# The loss of step s: a curve that starts near 1 and halves every HALVING steps.
HALVING = 50
VALIDATION_SIDE = 8
CHECKPOINT_SUFFIX = ".safetensors"
# The simulated embedding's width (SD 1.5's is 768; nothing here runs it).
EMBEDDING_DIM = 8
FLOAT32_BYTES = 4


def loss_at(step: int) -> float:
    return 0.1 + 0.9 * math.pow(0.5, step / HALVING)


def safetensors_bytes(metadata: dict[str, str], zeros: dict[str, list[int]] | None = None) -> bytes:
    """A valid safetensors file: the metadata, and a float32 tensor of zeros of each
    shape in `zeros` (by name), written without torch."""
    entries: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, shape in sorted((zeros or {}).items()):
        size = FLOAT32_BYTES * math.prod(shape)
        entries[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return struct.pack("<Q", len(header)) + header.encode() + bytes(offset)


def step_of(key: str) -> int:
    """The step in a checkpoint key (storage.checkpoint_key: the step, zero-padded)."""
    return int(key.rsplit("/", 1)[-1].removesuffix(CHECKPOINT_SUFFIX))


class SimulatedTraining:
    def __init__(self, s3: Any, order: DispatchedTraining, step_seconds: float) -> None:
        self.s3 = s3
        self.order = order
        self.step_seconds = step_seconds
        job = order.job
        self.names = (job.namespace, job.name, job.uid)

    async def run(self, hooks: TrainingHooks) -> TrainingOutcome:
        spec = self.order.spec
        examples = await asyncio.to_thread(read_dataset, self.s3, spec.dataset, DatasetLimits())
        start = step = await asyncio.to_thread(self.latest_step)
        hooks.on_start(start, len(examples))
        while step < spec.steps:
            if hooks.should_stop():
                checkpoint = None
                if step != start:
                    checkpoint = await self.checkpoint(step, hooks, validate=False)
                return TrainingOutcome(
                    finished=False, step=step, steps_run=step - start, checkpoint=checkpoint
                )
            await asyncio.sleep(self.step_seconds)
            step += 1
            hooks.on_progress(step, loss_at(step))
            if step % spec.checkpoint_every_steps == 0:
                await self.checkpoint(step, hooks)
        if step % spec.checkpoint_every_steps == 0 and step != start:
            images = self.images_of(step)  # rendered with the last checkpoint
        else:
            images = await asyncio.to_thread(self.validate, step)
        lora = await asyncio.to_thread(self.write_lora)
        return TrainingOutcome(
            finished=True, step=step, steps_run=step - start, lora=lora, validation_images=images
        )

    def latest_step(self) -> int:
        """The step of the highest checkpoint under the training's uid, 0 when none."""
        listed = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.order.output_bucket, Prefix=checkpoints_prefix(*self.names)
        )
        keys = [
            item["Key"]
            for page in listed
            for item in page.get("Contents", [])
            if item["Key"].endswith(CHECKPOINT_SUFFIX)
        ]
        return step_of(max(keys)) if keys else 0

    async def checkpoint(
        self, step: int, hooks: TrainingHooks, *, validate: bool = True
    ) -> TrainingCheckpoint:
        """Saves the checkpoint of `step`; renders the validation images unless it is a
        stop's (as the real trainer)."""
        data = safetensors_bytes({"step": str(step)})
        key = checkpoint_key(*self.names, step)
        location = await asyncio.to_thread(self.put, self.order.output_bucket, key, data)
        checkpoint = TrainingCheckpoint(step=step, uri=location.uri)
        images = await asyncio.to_thread(self.validate, step) if validate else []
        hooks.on_checkpoint(checkpoint, images)
        return checkpoint

    def validate(self, step: int) -> list[ValidationImage]:
        """A small PNG per validation prompt, its grey the step's loss."""
        shade = int(255 * loss_at(step))
        image = Image.new("RGB", (VALIDATION_SIDE, VALIDATION_SIDE), (shade, shade, shade))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        for index in range(len(self.order.spec.validation_prompts)):
            key = validation_image_key(*self.names, step, index)
            self.put(self.order.output_bucket, key, buffer.getvalue())
        return self.images_of(step)

    def images_of(self, step: int) -> list[ValidationImage]:
        bucket = self.order.output_bucket
        return [
            ValidationImage(
                step=step,
                index=index,
                uri=S3Location(
                    bucket=bucket, key=validation_image_key(*self.names, step, index)
                ).uri,
            )
            for index in range(len(self.order.spec.validation_prompts))
        ]

    def write_lora(self) -> TrainedFile:
        """The result: a LoRA, or for textual inversion an embedding."""
        spec = self.order.spec
        metadata = {
            "ss_sd_model_name": spec.base_model,
            "ss_seed": str(self.order.seed),
            "ss_steps": str(spec.steps),
            "diffleet_simulated": "true",
        }
        if spec.method is TrainingMethod.TEXTUAL_INVERSION:
            metadata["diffleet.method"] = str(spec.method)
            data = safetensors_bytes(metadata, {spec.output.name: [1, EMBEDDING_DIM]})
        else:
            data = safetensors_bytes(metadata | {"ss_network_dim": str(spec.rank)})
        namespace, _, uid = self.names
        key = trained_lora_key(namespace, spec.output.name, uid)
        location = self.put(self.order.models_bucket, key, data)
        return TrainedFile(
            uri=location.uri, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
        )

    def put(self, bucket: str, key: str, data: bytes) -> S3Location:
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        return S3Location(bucket=bucket, key=key)
