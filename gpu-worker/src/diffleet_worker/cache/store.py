"""ModelStore: the three tiers behind one door.

    acquire(ref, load)  the loaded model: hot if resident; else `load(path)` on the
                        artifact, from disk (warm) or downloaded first (cold)
    fetch(ref)          the artifact on local disk (LoRAs, or anything the runner reads
                        itself): warm or cold

Both return a handle to close (or use in a `with` block) when the job is done with the
model: until then it is pinned in its tier and never evicted. Each reports the tier that
served it. A warm artifact is verified by sha256 whenever it is served from disk; one
that no longer matches its digest is deleted and downloaded again. A ModelRef is refused
(ModelRefusedError) when its files could unpickle: before anything is downloaded.

Blocking (disk, S3, loading): call it from a worker thread (asyncio.to_thread). Two
requests for the same model wait for each other, so a model is downloaded and loaded
once; requests for different models run in parallel.
"""

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Generic, Self, TypeVar

from diffleet_core.messages import ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_worker.cache.cold import S3Source
from diffleet_worker.cache.digests import digest_of
from diffleet_worker.cache.errors import CacheTier, ModelCacheError
from diffleet_worker.cache.formats import check_single_file
from diffleet_worker.cache.hot import HotCache, Slot
from diffleet_worker.cache.warm import Entry, WarmCache

logger = logging.getLogger(__name__)
T = TypeVar("T")
H = TypeVar("H", bound="Handle")


@dataclass
class CacheStats:
    """Counters since start, for metrics."""

    downloads: int = 0
    downloaded_bytes: int = 0
    corrupt_refetches: int = 0  # warm artifacts that failed sha256 and were fetched again


class Handle:
    """Closes once: used by Fetched and Loaded."""

    def __init__(self, tier: CacheTier, close: Callable[[], None]) -> None:
        self.tier = tier
        self._close: Callable[[], None] | None = close

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Fetched(Handle):
    """An artifact on local disk, kept there until closed."""

    def __init__(self, entry: Entry, tier: CacheTier, warm: WarmCache) -> None:
        super().__init__(tier, lambda: warm.done(entry))
        self.path = entry.path
        self.size_bytes = entry.size_bytes


class Loaded(Handle, Generic[T]):
    """A loaded model, kept resident until closed."""

    def __init__(self, slot: Slot[T], tier: CacheTier, hot: HotCache[T]) -> None:
        super().__init__(tier, lambda: hot.done(slot))
        self.value = slot.value
        self.size_bytes = slot.size_bytes


class ModelStore(Generic[T]):
    def __init__(self, source: S3Source, warm: WarmCache, hot: HotCache[T]) -> None:
        self.source = source
        self.warm = warm
        self.hot = hot
        self._stats = CacheStats()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def hot_digests(self) -> list[str]:
        return self.hot.digests()

    def warm_digests(self) -> list[str]:
        return self.warm.digests()

    @property
    def stats(self) -> CacheStats:
        """A copy of the counters."""
        with self._guard:
            return replace(self._stats)

    def evict(self, digest: str) -> bool:
        """Drops a loaded model from memory (it stays warm on disk)."""
        return self.hot.evict(digest)

    def evict_all(self) -> list[str]:
        """Drops every loaded model (out of memory); those in use go when released."""
        return self.hot.evict_all()

    def acquire(
        self, ref: ModelRef, load: Callable[[Path], T], keep_hot: Collection[str] = ()
    ) -> Loaded[T]:
        """The model loaded by `load(path)`, resident until the handle is closed. Room is
        made evicting idle models `keep_hot` does not list first (HotCache)."""
        check_single_file(ref)
        with self._lock(ref.digest):
            slot = self.hot.take(ref.digest)
            if slot is not None:
                return self._served(ref, Loaded(slot, CacheTier.HOT, self.hot))
            with self._fetch(ref) as fetched:
                self.hot.make_room(fetched.size_bytes, keep_hot)
                slot = self.hot.put(ref.digest, load(fetched.path), keep_hot)
            return self._served(ref, Loaded(slot, fetched.tier, self.hot))

    def fetch(self, ref: ModelRef) -> Fetched:
        """The artifact on local disk, kept there until the handle is closed."""
        check_single_file(ref)
        with self._lock(ref.digest):
            return self._served(ref, self._fetch(ref))

    def _fetch(self, ref: ModelRef) -> Fetched:
        entry = self.warm.take(ref.digest)
        if entry is not None:
            if _intact(entry, ref.digest):
                return Fetched(entry, CacheTier.WARM, self.warm)
            logger.warning(
                "model %s/%s: %s fails its sha256 check; fetching it again",
                ref.namespace,
                ref.name,
                entry.path,
            )
            self.warm.discard(entry)
            with self._guard:
                self._stats.corrupt_refetches += 1
        return Fetched(self._download(ref), CacheTier.COLD, self.warm)

    def _download(self, ref: ModelRef) -> Entry:
        listing = self.source.list(ref)
        keep = set(self.hot.digests())
        with self.warm.admit(
            ref.digest, listing.size_bytes, folder=listing.folder, keep=keep
        ) as arrival:
            digest = self.source.download(listing, arrival.staging)
            if digest != ref.digest:
                raise ModelCacheError(
                    Reason.DIGEST_MISMATCH,
                    f"model {ref.namespace}/{ref.name}: {ref.source} hashes to {digest}, "
                    f"its ModelCache says {ref.digest}",
                    retryable=False,
                )
            entry = arrival.commit()
        with self._guard:
            self._stats.downloads += 1
            self._stats.downloaded_bytes += listing.size_bytes
        return entry

    def _served(self, ref: ModelRef, handle: H) -> H:
        logger.info(
            "model %s/%s (%s): %s", ref.namespace, ref.name, ref.digest[:12], handle.tier.value
        )
        return handle

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())


def _intact(entry: Entry, digest: str) -> bool:
    """The entry still hashes to its digest; one that cannot be read counts as corrupt."""
    try:
        return digest_of(entry.path) == digest
    except OSError as error:
        logger.warning("%s cannot be read: %s", entry.path, error)
        return False
