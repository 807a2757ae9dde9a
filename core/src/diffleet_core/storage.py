"""The S3 key scheme. A job's uid is part of every key, so a retried job overwrites its
own objects and never collides with another job of the same name."""

import hashlib
from dataclasses import dataclass

# Suffixes of formats that unpickle on load (arbitrary code): never loaded, whatever a
# spec says. The operator refuses them at verification, the worker again before download.
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")


def is_pickle(key: str) -> bool:
    """The one rule for every component: a key or path with a pickle suffix, in any case
    (`model.CKPT` unpickles as well as `model.ckpt`)."""
    return key.lower().endswith(PICKLE_SUFFIXES)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> "S3Location":
        """Splits an s3://bucket/key URI; raises ValueError naming what is wrong."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket or not key.strip("/"):
            raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
        return cls(bucket=bucket, key=key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def tenant_prefix(namespace: str) -> str:
    """Key prefix of everything a tenant's namespace stores in the outputs and uploads
    buckets (the trailing slash keeps `team` from matching `team-b`)."""
    return f"{namespace}/"


def output_prefix(namespace: str, job: str, uid: str) -> str:
    """Key prefix of a job's outputs in the outputs bucket."""
    return f"{tenant_prefix(namespace)}{job}/{uid}/"


def output_key(namespace: str, job: str, uid: str, index: int, extension: str) -> str:
    """Key of the index-th image of a job, a file of the job's output format."""
    return f"{output_prefix(namespace, job, uid)}{index}.{extension}"


def manifest_digest(files: dict[str, str]) -> str:
    """Digest of a diffusers folder: sha256 of its manifest, the lines
    "<sha256>  <relative path>" sorted by path. Operator and worker both compute it."""
    manifest = "".join(f"{files[path]}  {path}\n" for path in sorted(files))
    return hashlib.sha256(manifest.encode()).hexdigest()


# A training's steps are at most 100000 (TrainingJobSpec.steps): six digits keep its
# checkpoints' keys in step order when listed.
STEP_DIGITS = 6


def training_prefix(namespace: str, name: str, uid: str) -> str:
    """Key prefix, in the outputs bucket, of a training's checkpoints and validation images."""
    return f"{tenant_prefix(namespace)}trainings/{name}/{uid}/"


def checkpoints_prefix(namespace: str, name: str, uid: str) -> str:
    return f"{training_prefix(namespace, name, uid)}checkpoints/"


def checkpoint_key(namespace: str, name: str, uid: str, step: int) -> str:
    """Key of the checkpoint saved after `step` steps (LoRA, optimizer state and step)."""
    return f"{checkpoints_prefix(namespace, name, uid)}{step:0{STEP_DIGITS}d}.safetensors"


def validation_image_key(namespace: str, name: str, uid: str, step: int, index: int) -> str:
    """Key of the image of the index-th validation prompt rendered after `step` steps."""
    prefix = training_prefix(namespace, name, uid)
    return f"{prefix}validation/{step:0{STEP_DIGITS}d}/{index}.png"


def trained_lora_key(namespace: str, output: str, uid: str) -> str:
    """Key, in the models bucket, of the file a training produced (a LoRA, or a
    textual-inversion embedding): named after its ModelCache (`output.name`), under the
    training's uid."""
    return f"{tenant_prefix(namespace)}trainings/{output}/{uid}/{output}.safetensors"
