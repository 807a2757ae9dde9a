"""Verifies a ModelCache's artifact in S3: it exists, is in a safe format, and hashes to
what the spec says. The digest of a single file is its sha256; the digest of a diffusers
folder is the sha256 of its manifest (sorted lines "<sha256>  <relative path>")."""

import hashlib
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import ModelCacheSpec, ModelFormat
from diffleet_core.storage import S3Location, is_pickle, manifest_digest

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Verified:
    digest: str
    size_bytes: int


@dataclass(frozen=True)
class Refused:
    reason: Reason
    message: str


def verify(spec: ModelCacheSpec, s3: Any) -> Verified | Refused:
    """Blocking (S3 reads); the operator runs it in a thread."""
    location = S3Location.parse(spec.source)
    if spec.format is ModelFormat.SAFETENSORS:
        result = _verify_file(location, s3)
    else:
        result = _verify_folder(location, s3)
    if isinstance(result, Verified) and spec.sha256 and result.digest != spec.sha256:
        return Refused(
            Reason.DIGEST_MISMATCH, f"sha256 is {result.digest}, spec.sha256 says {spec.sha256}"
        )
    return result


def _verify_file(location: S3Location, s3: Any) -> Verified | Refused:
    if not location.key.endswith(".safetensors"):
        return Refused(Reason.UNSAFE_FORMAT, f"{location.uri} is not a .safetensors file")
    try:
        digest, size = _sha256(s3, location.bucket, location.key)
    except ClientError as error:
        return Refused(Reason.SOURCE_NOT_FOUND, f"{location.uri}: {error}")
    return Verified(digest, size)


def _verify_folder(location: S3Location, s3: Any) -> Verified | Refused:
    prefix = location.key.rstrip("/") + "/"
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=prefix
        )
        for obj in page.get("Contents", [])
    ]
    if not keys:
        return Refused(Reason.SOURCE_NOT_FOUND, f"no objects under {location.uri}")
    unsafe = [key for key in keys if is_pickle(key)]
    if unsafe:
        return Refused(
            Reason.UNSAFE_FORMAT,
            f"pickle files are refused (only safetensors load): {', '.join(sorted(unsafe)[:5])}",
        )
    files, total = {}, 0
    for key in keys:
        digest, size = _sha256(s3, location.bucket, key)
        files[key.removeprefix(prefix)] = digest
        total += size
    return Verified(manifest_digest(files), total)


def _sha256(s3: Any, bucket: str, key: str) -> tuple[str, int]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
