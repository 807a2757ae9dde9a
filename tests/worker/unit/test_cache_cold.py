"""Cold tier's S3 calls: bounded retries with backoff on transient errors, none on
answers that will not change. (Against real S3: tests/worker/test_cache_s3.py.)"""

import hashlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from diffleet_core.messages import ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_worker.cache import ModelCacheError, S3Source

DATA = b"safetensors bytes"
REF = ModelRef(
    namespace="ns",
    name="m",
    source="s3://models/m.safetensors",
    format=ModelFormat.SAFETENSORS,
    type=ModelType.CHECKPOINT,
    base_model=BaseModelFamily.SD15,
    digest=hashlib.sha256(DATA).hexdigest(),
)


class Body:
    def iter_chunks(self, size: int) -> list[bytes]:
        return [DATA[:5], DATA[5:]]

    def close(self) -> None:
        pass


class FlakyS3:
    """Fails the first `failures` calls with `error`, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def head_object(self, **_: Any) -> dict[str, Any]:
        self._call()
        return {"ContentLength": len(DATA)}

    def get_object(self, **_: Any) -> dict[str, Any]:
        self._call()
        return {"Body": Body()}


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


def test_transient_errors_are_retried_until_the_download_succeeds(tmp_path: Path) -> None:
    s3 = FlakyS3(failures=2, error=EndpointConnectionError(endpoint_url="http://s3"))
    source = S3Source(s3, attempts=3, backoff_seconds=0)
    listing = source.list(REF)  # call 3 answers
    target = tmp_path / "m.safetensors"

    assert source.download(listing, target) == REF.digest
    assert target.read_bytes() == DATA
    assert s3.calls == 4


def test_retries_are_bounded(tmp_path: Path) -> None:
    s3 = FlakyS3(failures=10, error=client_error("SlowDown", 503))
    source = S3Source(s3, attempts=3, backoff_seconds=0)
    with pytest.raises(ModelCacheError, match="failed 3 times") as failed:
        source.list(REF)
    assert failed.value.retryable is True
    assert s3.calls == 3


def test_a_missing_object_is_not_retried() -> None:
    s3 = FlakyS3(failures=10, error=client_error("404", 404))
    with pytest.raises(ModelCacheError, match="not found") as missing:
        S3Source(s3, attempts=3, backoff_seconds=0).list(REF)
    assert missing.value.reason is Reason.SOURCE_NOT_FOUND
    assert missing.value.retryable is False
    assert s3.calls == 1


def test_access_denied_is_not_retried() -> None:
    s3 = FlakyS3(failures=10, error=client_error("AccessDenied", 403))
    with pytest.raises(ModelCacheError, match="AccessDenied") as denied:
        S3Source(s3, attempts=3, backoff_seconds=0).list(REF)
    assert denied.value.retryable is False
    assert s3.calls == 1


def test_a_source_that_is_not_an_s3_uri_is_an_invalid_spec() -> None:
    bad = REF.model_copy(update={"source": "https://example.com/m.safetensors"})
    with pytest.raises(ModelCacheError, match="not an s3://bucket/key URI") as invalid:
        S3Source(FlakyS3(failures=0, error=Exception()), backoff_seconds=0).list(bad)
    assert invalid.value.reason is Reason.INVALID_SPEC
