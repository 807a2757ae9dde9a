"""Warm tier: a byte budget with LRU eviction, atomic arrival, and an index rebuilt from
the directory at start."""

import hashlib
from pathlib import Path

import pytest

from diffleet_core.resources.conditions import Reason
from diffleet_worker.cache import ModelCacheError, WarmCache


def digest(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def store_file(cache: WarmCache, tag: str, size: int, keep: frozenset[str] = frozenset()) -> str:
    """Adds a single-file entry of `size` bytes, idle; returns its digest."""
    key = digest(tag)
    with cache.admit(key, size, folder=False, keep=keep) as arrival:
        arrival.staging.write_bytes(b"x" * size)
        cache.done(arrival.commit())
    return key


def test_a_committed_file_is_in_place_and_listed(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    key = digest("a")
    with cache.admit(key, 10, folder=False, keep=frozenset()) as arrival:
        arrival.staging.write_bytes(b"0123456789")
        assert cache.digests() == []  # not visible while being written
        entry = arrival.commit()

    assert entry.path == tmp_path / f"{key}.safetensors"
    assert entry.path.read_bytes() == b"0123456789"
    assert cache.digests() == [key]
    assert cache.used_bytes == 10
    assert list((tmp_path / ".partial").iterdir()) == []


def test_a_committed_folder_keeps_its_tree(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    key = digest("folder")
    with cache.admit(key, 6, folder=True, keep=frozenset()) as arrival:
        (arrival.staging / "unet").mkdir(parents=True)
        (arrival.staging / "unet" / "w.safetensors").write_bytes(b"abc")
        (arrival.staging / "model_index.json").write_bytes(b"{}\n")
        entry = arrival.commit()

    assert entry.path == tmp_path / key
    assert (entry.path / "unet" / "w.safetensors").read_bytes() == b"abc"
    assert entry.size_bytes == 6


def download_half_then_fail(cache: WarmCache) -> None:
    with cache.admit(digest("a"), 60, folder=False, keep=frozenset()) as arrival:
        arrival.staging.write_bytes(b"half")
        assert cache.used_bytes == 60
        raise OSError("network went away")


def test_a_failed_arrival_leaves_nothing_and_frees_its_reservation(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    with pytest.raises(OSError, match="network"):
        download_half_then_fail(cache)

    assert cache.used_bytes == 0
    assert cache.digests() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial"]
    assert list((tmp_path / ".partial").iterdir()) == []


def test_a_crash_mid_download_leaves_no_entry_after_restart(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    kept = store_file(cache, "kept", 10)
    arrival = cache.admit(digest("interrupted"), 50, folder=False, keep=frozenset())
    arrival.staging.write_bytes(b"half a file")  # the process dies here

    restarted = WarmCache(tmp_path, budget_bytes=100)

    assert restarted.digests() == [kept]
    assert restarted.used_bytes == 10
    assert list((tmp_path / ".partial").iterdir()) == []


def test_restart_rebuilds_the_index_in_least_recently_used_order(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    a, b, c = (store_file(cache, tag, 10) for tag in "abc")
    entry = cache.take(a)
    assert entry is not None
    cache.done(entry)
    (tmp_path / "notes.txt").write_text("not a cache entry")

    restarted = WarmCache(tmp_path, budget_bytes=100)

    assert restarted.digests() == [a, c, b]
    assert restarted.used_bytes == 30
    store_file(restarted, "d", 90)  # needs two evictions: b, then c
    assert restarted.digests()[1:] == [a]
    assert (tmp_path / "notes.txt").exists()


def test_least_recently_used_entries_make_room_for_an_arrival(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    a = store_file(cache, "a", 40)
    b = store_file(cache, "b", 40)
    entry = cache.take(a)
    assert entry is not None
    cache.done(entry)

    c = store_file(cache, "c", 40)

    assert cache.digests() == [c, a]
    assert not (tmp_path / f"{b}.safetensors").exists()
    assert cache.used_bytes == 80


def test_entries_in_use_are_never_evicted(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    a = store_file(cache, "a", 40)
    b = store_file(cache, "b", 40)
    busy = cache.take(a)  # a job reads a (the least recently used)
    assert busy is not None

    store_file(cache, "c", 40)
    assert a in cache.digests()
    assert b not in cache.digests()

    with pytest.raises(ModelCacheError, match="disk cache full") as refused:
        cache.admit(digest("d"), 70, folder=False, keep=frozenset())
    assert refused.value.retryable is True
    assert len(cache.digests()) == 2  # nothing evicted for an arrival that cannot fit


def test_hot_models_are_evicted_from_disk_last(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    hot = store_file(cache, "hot", 40)
    cold = store_file(cache, "cold", 40)

    store_file(cache, "new", 40, keep=frozenset({hot}))

    assert hot in cache.digests()
    assert cold not in cache.digests()


def test_a_model_larger_than_the_budget_is_refused_for_good(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    with pytest.raises(ModelCacheError, match="more than the worker's disk cache budget") as big:
        cache.admit(digest("big"), 101, folder=False, keep=frozenset())
    assert big.value.retryable is False
    assert big.value.reason is Reason.FAILED


def test_a_discarded_entry_is_gone_from_disk_and_index(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path, budget_bytes=100)
    key = store_file(cache, "a", 10)
    entry = cache.take(key)
    assert entry is not None

    cache.discard(entry)

    assert cache.digests() == []
    assert cache.used_bytes == 0
    assert not entry.path.exists()
