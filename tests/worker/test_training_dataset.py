"""Training datasets read from the stack's S3 (MinIO) by the worker: a generated
micro-shapes dataset comes back as it went in, every page of a listing is read, and
broken folders are refused with the reason a TrainingJob's condition would carry.
Through the worker's dataset cache: a second read sends no GET to S3, a changed object
makes a new entry, a truncated file is fetched again, the budget holds."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image
from prometheus_client import REGISTRY

from diffleet_core.datasets import (
    DatasetLimits,
    DatasetReason,
    DatasetRefusedError,
    dataset_location,
    dataset_prefix,
)
from diffleet_worker.cache import DatasetCache
from diffleet_worker.training.dataset import Example, list_objects, read_dataset
from hack.models.datasets import NEW_WORD, YELLOW, shapes_dataset, upload_dataset
from tests.support.pictures import png_bytes

BUCKET = "diffleet-uploads"
LIMITS = DatasetLimits()
MIB = 1024 * 1024


@pytest.fixture
def s3(local_stack: dict[str, str]) -> Any:
    """A client with the worker's timeouts."""
    return boto3.client("s3", config=Config(connect_timeout=5, read_timeout=60))


@pytest.fixture
def prefix(s3: Any) -> Iterator[str]:
    """A dataset folder of this test's own, emptied afterwards."""
    prefix = dataset_prefix("tests", f"dataset-{uuid.uuid4().hex[:8]}")
    yield prefix
    empty(s3, prefix)


@pytest.fixture
def prefixes(s3: Any) -> Iterator[list[str]]:
    """Three dataset folders of this test's own, emptied afterwards."""
    prefixes = [dataset_prefix("tests", f"dataset-{uuid.uuid4().hex[:8]}") for _ in range(3)]
    yield prefixes
    for prefix in prefixes:
        empty(s3, prefix)


def empty(s3: Any, prefix: str) -> None:
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])


class Gets:
    """GetObject requests the client sends to S3 (botocore's before-send event: each
    request on the wire, retries included)."""

    def __init__(self, s3: Any) -> None:
        self.count = 0
        s3.meta.events.register("before-send.s3.GetObject", self._sent)

    def _sent(self, **_: Any) -> None:
        self.count += 1


def reads(tier: str) -> float:
    return REGISTRY.get_sample_value("diffleet_worker_dataset_reads_total", {"tier": tier}) or 0.0


def pictures(examples: list[Example]) -> list[tuple[bytes, str]]:
    return [(example.image.tobytes(), example.caption) for example in examples]


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


def test_a_second_read_comes_from_the_disk_cache_without_a_get(
    s3: Any, prefix: str, tmp_path: Path
) -> None:
    uri = upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 4, seed=4))
    gets = Gets(s3)
    before = (reads("s3"), reads("disk"))
    first = read_dataset(s3, uri, LIMITS, DatasetCache(tmp_path, MIB))
    assert gets.count == 8  # 4 images, 4 captions
    restarted = DatasetCache(tmp_path, MIB)  # a worker restarted on the same disk
    assert pictures(read_dataset(s3, uri, LIMITS, restarted)) == pictures(first)
    assert gets.count == 8
    assert (reads("s3"), reads("disk")) == (before[0] + 1, before[1] + 1)
    assert len(restarted.keys()) == 1


def test_an_object_changed_in_s3_makes_a_new_entry(s3: Any, prefix: str, tmp_path: Path) -> None:
    uri = upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 2, seed=5))
    cache = DatasetCache(tmp_path, MIB)
    first = read_dataset(s3, uri, LIMITS, cache)
    put(s3, f"{prefix}0001.txt", b"a zorp square, recaptioned")
    gets = Gets(s3)
    second = read_dataset(s3, uri, LIMITS, cache)
    assert [example.caption for example in second] == [
        first[0].caption,
        "a zorp square, recaptioned",
    ]
    assert gets.count == 4
    assert len(cache.keys()) == 2


def test_a_truncated_cached_file_is_fetched_again(s3: Any, prefix: str, tmp_path: Path) -> None:
    uri = upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 2, seed=6))
    cache = DatasetCache(tmp_path, MIB)
    first = read_dataset(s3, uri, LIMITS, cache)
    (entry,) = cache.keys()
    image = tmp_path / entry / "00000"  # the first object by key: 0000.png
    image.write_bytes(image.read_bytes()[:100])
    gets = Gets(s3)
    assert pictures(read_dataset(s3, uri, LIMITS, cache)) == pictures(first)
    assert gets.count == 4
    assert pictures(read_dataset(s3, uri, LIMITS, cache)) == pictures(first)
    assert (gets.count, cache.keys()) == (4, [entry])


def test_an_object_replaced_during_the_read_is_not_cached(
    s3: Any, prefix: str, tmp_path: Path
) -> None:
    uri = upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 2, seed=7))
    replacer = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=60))

    def replace_the_caption_once(**_: Any) -> None:
        s3.meta.events.unregister("before-call.s3.GetObject", replace_the_caption_once)
        put(replacer, f"{prefix}0001.txt", b"a zorp square, replaced meanwhile")

    s3.meta.events.register("before-call.s3.GetObject", replace_the_caption_once)
    cache = DatasetCache(tmp_path, MIB)
    with pytest.raises(ClientError) as caught:
        read_dataset(s3, uri, LIMITS, cache)
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    assert cache.keys() == []


def test_the_least_recently_used_dataset_leaves_to_keep_the_budget(
    s3: Any, prefixes: list[str], tmp_path: Path
) -> None:
    uris = [
        upload_dataset(s3, BUCKET, prefix, shapes_dataset(YELLOW, NEW_WORD, 2, seed=8 + index))
        for index, prefix in enumerate(prefixes)
    ]
    sizes = [
        sum(item.size_bytes for item in list_objects(s3, dataset_location(uri)).values())
        for uri in uris
    ]
    budget = sum(sorted(sizes)[1:])  # any two fit, never three
    cache = DatasetCache(tmp_path, budget)
    keys = []
    for uri in uris[:2]:
        read_dataset(s3, uri, LIMITS, cache)
        keys.append(cache.keys()[0])
    read_dataset(s3, uris[0], LIMITS, cache)  # the first used after the second
    read_dataset(s3, uris[2], LIMITS, cache)
    assert cache.keys()[1:] == [keys[0]]
    assert cache.used_bytes <= budget
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([".partial", *cache.keys()])
    gets = Gets(s3)
    read_dataset(s3, uris[0], LIMITS, cache)
    assert gets.count == 0
