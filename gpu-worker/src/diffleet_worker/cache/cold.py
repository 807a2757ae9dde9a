"""Cold tier: the artifact in S3, streamed to local disk with its sha256 computed on the
way. The boto3 client is the caller's, built with connect and read timeouts; each S3
call here is retried a bounded number of times with exponential backoff (by default
about 30 s of waiting, to outlast an S3 restart; past that the run fails as retryable
and the operator requeues the job). Names are
checked (formats.py) when listing, so a refused artifact is never downloaded."""

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from diffleet_core.messages import ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import ModelFormat
from diffleet_core.storage import S3Location, manifest_digest
from diffleet_worker.cache.errors import ModelCacheError
from diffleet_worker.cache.formats import check_folder, check_single_file

logger = logging.getLogger(__name__)
R = TypeVar("R")
NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
RETRIED_CLIENT_STATUSES = {408, 429}


@dataclass(frozen=True)
class RemoteFile:
    key: str
    path: str  # relative to the folder; "" for a single-file model
    size_bytes: int


@dataclass(frozen=True)
class Listing:
    """What downloading a model means: its files in S3, with their sizes."""

    ref: ModelRef
    bucket: str
    files: tuple[RemoteFile, ...]

    @property
    def folder(self) -> bool:
        return self.ref.format is ModelFormat.DIFFUSERS

    @property
    def size_bytes(self) -> int:
        return sum(file.size_bytes for file in self.files)


class S3Source:
    def __init__(
        self,
        s3: Any,
        *,
        attempts: int = 7,
        backoff_seconds: float = 0.5,
        chunk_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        self.s3 = s3
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.chunk_bytes = chunk_bytes

    def list(self, ref: ModelRef) -> Listing:
        """The model's files; raises ModelRefusedError for pickle files, ModelCacheError
        (SourceNotFound) when nothing is there, (InvalidSpec) for a source not s3://."""
        try:
            location = S3Location.parse(ref.source)
        except ValueError as error:
            raise ModelCacheError(Reason.INVALID_SPEC, str(error), retryable=False) from error
        if ref.format is ModelFormat.SAFETENSORS:
            check_single_file(ref)
            head = self._retrying(
                location.uri,
                lambda: self.s3.head_object(Bucket=location.bucket, Key=location.key),
            )
            files: tuple[RemoteFile, ...] = (
                RemoteFile(location.key, "", int(head["ContentLength"])),
            )
        else:
            files = self._retrying(location.uri, lambda: self._list_folder(location))
            if not files:
                raise ModelCacheError(
                    Reason.SOURCE_NOT_FOUND,
                    f"model {ref.namespace}/{ref.name}: no objects under {location.uri}",
                    retryable=False,
                )
            check_folder(ref, [file.path for file in files])
        return Listing(ref, location.bucket, files)

    def download(self, listing: Listing, into: Path) -> str:
        """Writes the artifact at `into` (a file, or a folder for diffusers) and returns
        its digest, computed while writing."""
        if not listing.folder:
            return self._download_file(listing.bucket, listing.files[0].key, into)
        digests = {}
        for file in listing.files:
            target = into.joinpath(*file.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            digests[file.path] = self._download_file(listing.bucket, file.key, target)
        return manifest_digest(digests)

    def _list_folder(self, location: S3Location) -> tuple[RemoteFile, ...]:
        prefix = location.key.rstrip("/") + "/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=prefix
        )
        return tuple(
            RemoteFile(item["Key"], item["Key"].removeprefix(prefix), int(item["Size"]))
            for page in pages
            for item in page.get("Contents", [])
        )

    def _download_file(self, bucket: str, key: str, target: Path) -> str:
        def once() -> str:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            digest = hashlib.sha256()
            try:
                with target.open("wb") as out:
                    for chunk in body.iter_chunks(self.chunk_bytes):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                body.close()
            return digest.hexdigest()

        return self._retrying(f"s3://{bucket}/{key}", once)

    def _retrying(self, what: str, call: Callable[[], R]) -> R:
        """`call`, retried on connection errors, timeouts, throttling and 5xx answers."""
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", ""))
                status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if code in NOT_FOUND or status == 404:
                    raise ModelCacheError(
                        Reason.SOURCE_NOT_FOUND, f"{what} not found", retryable=False
                    ) from error
                if 400 <= status < 500 and status not in RETRIED_CLIENT_STATUSES:
                    raise ModelCacheError(
                        Reason.FAILED, f"{what}: {code or status}", retryable=False
                    ) from error
                last: Exception = error
            except BotoCoreError as error:
                last = error
            if attempt < self.attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                logger.warning("%s: %s; retrying in %.1fs", what, last, delay)
                time.sleep(delay)
        raise ModelCacheError(
            Reason.FAILED,
            f"{what}: failed {self.attempts} times, last: {last}",
            retryable=True,
        )
