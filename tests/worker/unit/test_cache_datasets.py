"""Dataset cache: keyed by the listing, written whole or not at all, a partial entry
fetched again, least recently used entries out first within the byte budget, the index
rebuilt from the directory at start. The objects come from a plain function here; the
S3 side is tests/worker/test_training_dataset.py's."""

from pathlib import Path

import pytest

from diffleet_worker.cache import (
    DATASETS,
    DatasetCache,
    DatasetIdentity,
    DatasetTier,
    ListedObject,
    WarmCache,
)


class Bucket:
    """Objects by key, counting the downloads asked of it."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.downloads = 0

    def identity(self) -> DatasetIdentity:
        listed = [
            ListedObject(key, len(data), f'"{data.hex()}"') for key, data in self.objects.items()
        ]
        return DatasetIdentity.of("bucket", listed)

    def download(self, key: str) -> bytes:
        self.downloads += 1
        return self.objects[key]


def dataset(tag: str, size: int = 10) -> Bucket:
    return Bucket({f"{tag}/1.png": b"p" * size, f"{tag}/1.txt": tag.encode()})


def read(cache: DatasetCache, bucket: Bucket) -> tuple[DatasetTier, dict[str, bytes]]:
    with cache.open(bucket.identity(), bucket.download) as source:
        return source.tier, {key: source.read(key) for key in bucket.objects}


def test_the_key_is_the_listing_in_any_order() -> None:
    a, b = ListedObject("d/1.png", 10, '"e1"'), ListedObject("d/1.txt", 3, '"e2"')
    key = DatasetIdentity.of("bucket", [a, b]).key
    assert DatasetIdentity.of("bucket", [b, a]).key == key
    assert len(key) == 64
    changed = [
        DatasetIdentity.of("other", [a, b]),
        DatasetIdentity.of("bucket", [a, ListedObject("d/1.txt", 3, '"e3"')]),
        DatasetIdentity.of("bucket", [a, ListedObject("d/1.txt", 4, '"e2"')]),
        DatasetIdentity.of("bucket", [a]),
    ]
    assert key not in {identity.key for identity in changed}


def test_a_second_read_comes_from_disk_with_the_same_bytes(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, budget_bytes=100)
    bucket = dataset("a")
    first = read(cache, bucket)
    second = read(cache, bucket)
    assert (first[0], second[0]) == (DatasetTier.S3, DatasetTier.DISK)
    assert first[1] == second[1] == bucket.objects
    assert bucket.downloads == 2
    assert cache.keys() == [bucket.identity().key]
    assert cache.used_bytes == 11
    assert list((tmp_path / ".partial").iterdir()) == []


def test_a_failed_or_unfinished_read_keeps_nothing(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, budget_bytes=100)
    bucket = dataset("a")

    def refused_after_one_object() -> None:
        with cache.open(bucket.identity(), bucket.download) as source:
            source.read("a/1.png")
            raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        refused_after_one_object()
    with cache.open(bucket.identity(), bucket.download) as source:
        source.read("a/1.png")  # the caption never read
    assert cache.keys() == []
    assert list((tmp_path / ".partial").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_partial_entry_is_fetched_again(tmp_path: Path, damage: str) -> None:
    cache = DatasetCache(tmp_path, budget_bytes=100)
    bucket = dataset("a")
    read(cache, bucket)
    stored = next((tmp_path / cache.keys()[0]).iterdir())
    if damage == "truncate":
        stored.write_bytes(stored.read_bytes()[:-1])
    else:
        stored.unlink()
    assert read(cache, bucket) == (DatasetTier.S3, bucket.objects)
    assert read(cache, bucket) == (DatasetTier.DISK, bucket.objects)
    assert bucket.downloads == 4


def test_least_recently_used_datasets_leave_first(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, budget_bytes=25)  # two datasets of 11 bytes fit
    a, b, c = dataset("a"), dataset("b"), dataset("c")
    read(cache, a)
    read(cache, b)
    read(cache, a)  # a used after b
    read(cache, c)
    assert cache.keys() == [c.identity().key, a.identity().key]
    assert cache.used_bytes == 22
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([".partial", *cache.keys()])


def test_a_dataset_over_the_budget_is_read_and_not_kept(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, budget_bytes=25)
    small, large = dataset("a"), dataset("b", size=30)
    read(cache, small)
    assert read(cache, large) == (DatasetTier.S3, large.objects)
    assert cache.keys() == [small.identity().key]  # nothing evicted for it either


def test_the_index_and_its_order_survive_a_restart(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, budget_bytes=100)
    a, b = dataset("a"), dataset("b")
    read(cache, a)
    read(cache, b)
    read(cache, a)
    (tmp_path / ".partial" / "leftover").mkdir()
    restarted = DatasetCache(tmp_path, budget_bytes=100)
    assert restarted.keys() == [a.identity().key, b.identity().key]
    assert restarted.used_bytes == 22
    assert list((tmp_path / ".partial").iterdir()) == []
    assert read(restarted, b)[0] is DatasetTier.DISK


def test_the_warm_tier_leaves_the_datasets_folder_alone(tmp_path: Path) -> None:
    read(DatasetCache(tmp_path / DATASETS, budget_bytes=100), dataset("a"))
    warm = WarmCache(tmp_path, budget_bytes=100)
    assert (warm.digests(), warm.used_bytes) == ([], 0)
    assert DatasetCache(tmp_path / DATASETS, budget_bytes=100).used_bytes == 11
