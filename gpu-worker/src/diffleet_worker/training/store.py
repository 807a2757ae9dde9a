"""Where a training's files go in S3 (keys of diffleet_core.storage): checkpoints and
validation images in the outputs bucket under the training's uid, the resulting file (a
LoRA or an embedding) in the models bucket. The client is the worker's, with its
connect and read timeouts."""

from dataclasses import dataclass
from typing import Any

from diffleet_core.storage import (
    S3Location,
    checkpoint_key,
    checkpoints_prefix,
    trained_lora_key,
    validation_image_key,
)
from diffleet_worker.training.checkpoints import Checkpoint, decode, encode


@dataclass(frozen=True)
class TrainingStore:
    s3: Any
    outputs_bucket: str
    models_bucket: str
    namespace: str
    name: str
    uid: str

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint of the highest step, or None when the training has none."""
        prefix = checkpoints_prefix(self.namespace, self.name, self.uid)
        keys = [
            item["Key"]
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.outputs_bucket, Prefix=prefix
            )
            for item in page.get("Contents", [])
            if item["Key"].endswith(".safetensors")
        ]
        if not keys:
            return None
        return decode(self._get(self.outputs_bucket, max(keys)))  # keys sort by step

    def put_checkpoint(self, checkpoint: Checkpoint) -> S3Location:
        key = checkpoint_key(self.namespace, self.name, self.uid, checkpoint.step)
        return self._put(self.outputs_bucket, key, encode(checkpoint), "application/octet-stream")

    def put_validation_image(self, step: int, index: int, png: bytes) -> S3Location:
        key = validation_image_key(self.namespace, self.name, self.uid, step, index)
        return self._put(self.outputs_bucket, key, png, "image/png")

    def put_output(self, output: str, data: bytes) -> S3Location:
        key = trained_lora_key(self.namespace, output, self.uid)
        return self._put(self.models_bucket, key, data, "application/octet-stream")

    def _put(self, bucket: str, key: str, data: bytes, content_type: str) -> S3Location:
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return S3Location(bucket=bucket, key=key)

    def _get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body
