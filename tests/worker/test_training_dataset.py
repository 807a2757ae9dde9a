"""Training datasets read from the stack's S3 (MinIO) by the worker: a generated
micro-shapes dataset comes back as it went in, every page of a listing is read, and
broken folders are refused with the reason a TrainingJob's condition would carry."""

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from diffleet_core.datasets import (
    DatasetLimits,
    DatasetReason,
    DatasetRefusedError,
    dataset_location,
    dataset_prefix,
)
from diffleet_worker.training.dataset import list_objects, read_dataset
from hack.models.datasets import NEW_WORD, YELLOW, shapes_dataset, upload_dataset
from tests.support.pictures import png_bytes

BUCKET = "diffleet-uploads"
LIMITS = DatasetLimits()


@pytest.fixture
def s3(local_stack: dict[str, str]) -> Any:
    """A client with the worker's timeouts."""
    return boto3.client("s3", config=Config(connect_timeout=5, read_timeout=60))


@pytest.fixture
def prefix(s3: Any) -> Iterator[str]:
    """A dataset folder of this test's own, emptied afterwards."""
    prefix = dataset_prefix("tests", f"dataset-{uuid.uuid4().hex[:8]}")
    yield prefix
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])


def put(s3: Any, key: str, body: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def refusal(s3: Any, uri: str) -> DatasetRefusedError:
    with pytest.raises(DatasetRefusedError) as caught:
        read_dataset(s3, uri, LIMITS)
    return caught.value


def test_a_generated_dataset_reads_back_as_it_went_in(s3: Any, prefix: str) -> None:
    generated = shapes_dataset(YELLOW, NEW_WORD, 12, seed=0)
    uri = upload_dataset(s3, BUCKET, prefix, generated)
    put(s3, f"{prefix}README.md", b"yellow shapes, captioned with a new word")
    examples = read_dataset(s3, uri, LIMITS)
    assert [(e.image.mode, e.image.tobytes(), e.caption) for e in examples] == [
        ("RGB", image.tobytes(), caption) for image, caption in generated
    ]
    assert read_dataset(s3, uri.rstrip("/"), LIMITS) == examples


def test_every_page_of_a_listing_is_read(s3: Any, prefix: str) -> None:
    uri = upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 3, seed=1))
    listed = list_objects(s3, dataset_location(uri), page_size=2)
    assert sorted(listed) == [
        f"{prefix}{index:04d}.{kind}" for index in range(3) for kind in ("png", "txt")
    ]


def test_a_folder_without_images_is_refused(s3: Any, prefix: str) -> None:
    uri = f"s3://{BUCKET}/{prefix}"
    assert refusal(s3, uri).reason is DatasetReason.NO_IMAGES
    put(s3, f"{prefix}notes.txt", b"the images come later")
    refused = refusal(s3, uri)
    assert (refused.reason, "notes.txt" in refused.message) == (DatasetReason.NO_IMAGES, True)


def test_an_image_without_its_caption_is_refused(s3: Any, prefix: str) -> None:
    uri = upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 2, seed=2))
    put(s3, f"{prefix}extra.png", png_bytes(Image.new("RGB", (64, 64), YELLOW)))
    refused = refusal(s3, uri)
    assert (refused.reason, "extra.png" in refused.message) == (
        DatasetReason.MISSING_CAPTIONS,
        True,
    )


def test_a_fake_image_is_refused_by_its_bytes(s3: Any, prefix: str) -> None:
    uri = upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 2, seed=3))
    put(s3, f"{prefix}0001.png", b"#!/bin/sh\necho not an image\n")
    refused = refusal(s3, uri)
    assert refused.reason is DatasetReason.IMAGE_REFUSED
    assert f"{prefix}0001.png is not a PNG, JPEG or WebP image" in refused.message


def test_a_decompression_bomb_is_refused_unexpanded(s3: Any, prefix: str) -> None:
    bomb = png_bytes(Image.new("L", (4096, 4096)))
    assert len(bomb) < LIMITS.max_image_bytes // 100
    put(s3, f"{prefix}bomb.png", bomb)
    put(s3, f"{prefix}bomb.txt", b"a black square")
    refused = refusal(s3, f"s3://{BUCKET}/{prefix}")
    assert (refused.reason, "16777216 pixels" in refused.message) == (
        DatasetReason.TOO_LARGE,
        True,
    )


def test_a_missing_bucket_is_not_found(s3: Any) -> None:
    missing = f"s3://diffleet-missing-{uuid.uuid4().hex[:8]}/tests/datasets/ink/"
    assert refusal(s3, missing).reason is DatasetReason.NOT_FOUND
