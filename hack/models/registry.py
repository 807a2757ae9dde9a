"""Registers built models: uploads each artifact to the models bucket under a key that
holds its digest, and applies a ModelCache naming it. Both steps are idempotent: objects
already uploaded (same size and sha256) are skipped, and an unchanged ModelCache is
applied unchanged."""

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources.model_cache import KIND, ModelCacheSpec, ModelFormat
from diffleet_core.settings import get_settings
from diffleet_core.storage import S3Location, manifest_digest
from hack.models.cache import PACKAGE

S3_CONFIG = Config(
    connect_timeout=5, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"}
)
KUBECTL_TIMEOUT = 60
CHUNK = 1024 * 1024
LABEL = "diffleet.io/test-model"


@dataclass(frozen=True)
class Artifact:
    """A local model: one file, or a folder of files keyed by their relative path."""

    path: Path
    files: dict[str, str]
    size_bytes: int

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    @property
    def digest(self) -> str:
        """What the operator computes: a file's sha256, or a folder's manifest digest."""
        if self.is_folder:
            return manifest_digest(self.files)
        return self.files[self.path.name]


@dataclass(frozen=True)
class RegisteredModel:
    """A model in S3 with its ModelCache applied."""

    name: str
    namespace: str
    path: Path
    spec: ModelCacheSpec

    @property
    def source(self) -> str:
        return self.spec.source

    @property
    def digest(self) -> str:
        assert self.spec.sha256 is not None
        return self.spec.sha256


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path) -> Artifact:
    if path.is_dir():
        paths = sorted(file for file in path.rglob("*") if file.is_file())
        files = {file.relative_to(path).as_posix(): sha256_file(file) for file in paths}
        return Artifact(path, files, sum(file.stat().st_size for file in paths))
    return Artifact(path, {path.name: sha256_file(path)}, path.stat().st_size)


def s3_client() -> Any:
    """boto3 reads the endpoint and credentials from AWS_* (`make env`)."""
    return boto3.client("s3", config=S3_CONFIG)


def upload(artifact: Artifact, bucket: str, prefix: str, s3: Any) -> str:
    """Uploads the files missing under `prefix`; returns the artifact's s3:// URI (a
    folder's ends in /)."""
    for relative, sha256 in sorted(artifact.files.items()):
        local = artifact.path / relative if artifact.is_folder else artifact.path
        key = prefix + relative
        if not already_uploaded(s3, bucket, key, sha256, local.stat().st_size):
            s3.upload_file(str(local), bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}})
    location = S3Location(bucket, prefix if artifact.is_folder else prefix + artifact.path.name)
    return location.uri


def already_uploaded(s3: Any, bucket: str, key: str, sha256: str, size: int) -> bool:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    same_size: bool = head["ContentLength"] == size
    return same_size and head.get("Metadata", {}).get("sha256") == sha256


@dataclass(frozen=True)
class Kubectl:
    """kubectl with the caller's KUBECONFIG, a timeout on every call."""

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_path(), "--request-timeout=20s", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT,
            check=False,
        )

    def check(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


def kubectl_path() -> str:
    """kubectl on PATH, else the one `make tools` links into .diffleet/bin."""
    found = shutil.which("kubectl")
    if found:
        return found
    linked = PACKAGE.parents[1] / ".diffleet" / "bin" / "kubectl"
    if linked.exists():
        return str(linked)
    raise RuntimeError("kubectl not found: run `make tools` or put kubectl on PATH")


def model_cache_body(name: str, namespace: str, spec: ModelCacheSpec) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "true"}},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def apply_model_cache(kubectl: Kubectl, name: str, namespace: str, spec: ModelCacheSpec) -> None:
    """Applies the ModelCache. `source` is immutable, so one naming another artifact (a
    rebuilt model) is deleted first."""
    found = kubectl.run("get", "modelcache", name, "-n", namespace, "-o", "json")
    if found.returncode == 0:
        current = json.loads(found.stdout)["spec"].get("source")
        if current != spec.source:
            kubectl.check("delete", "modelcache", name, "-n", namespace, "--wait=true")
    elif "NotFound" not in found.stderr:
        raise RuntimeError(f"kubectl get modelcache {name} -n {namespace}: {found.stderr.strip()}")
    kubectl.check("apply", "-f", "-", stdin=json.dumps(model_cache_body(name, namespace, spec)))


def register(
    name: str,
    path: Path,
    *,
    namespace: str,
    prefix: str,
    model_format: ModelFormat,
    **spec: Any,
) -> RegisteredModel:
    """Uploads `path` under `prefix` + its digest's first 12 digits, applies its
    ModelCache in `namespace`; `spec` adds fields (type, baseModel, vramGiB, ...)."""
    artifact = describe(path)
    bucket = get_settings().buckets.models
    key_prefix = f"{prefix.rstrip('/')}/{artifact.digest[:12]}/"
    source = upload(artifact, bucket, key_prefix, s3_client())
    model_spec = ModelCacheSpec.model_validate(
        {
            "source": source,
            "format": model_format,
            "sha256": artifact.digest,
            "sizeBytes": artifact.size_bytes,
            **spec,
        }
    )
    apply_model_cache(Kubectl(), name, namespace, model_spec)
    return RegisteredModel(name, namespace, path, model_spec)
