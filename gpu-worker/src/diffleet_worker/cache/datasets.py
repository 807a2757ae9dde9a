"""Training datasets on local disk: the raw objects a training read from S3, kept so that
a training resumed or run again on this worker does not download its dataset again.

    <cache_dir>/datasets/<key>/<index>   one dataset's objects, named by their position
                                         in its identity
    <cache_dir>/datasets/.partial/       entries being written or deleted

A dataset's identity is its listing: the bucket and the sorted (key, size, ETag) of the
objects read; the entry's key is the sha256 of that, so a dataset changed in S3 (an
object replaced, added or removed) is another entry, never a stale one. An entry is
written under .partial and renamed into place whole; one with a file missing or of
another size than listed (a crash, a hand edit) is deleted and fetched again. The bytes
are only a source: the caller sniffs, bounds and decodes them on every read, as it does
S3's.

Entries have their own byte budget (DIFFLEET_WORKER_DATASET_CACHE_BYTES), apart from the
models' warm tier: room is made before a download by deleting the least recently used
entries; a dataset larger than the whole budget is read from S3 and not kept. At start
.partial is emptied and the entries are indexed by modification time, which every use
touches. One worker process owns the root; reads take turns (one lock), which costs
nothing while a worker runs one training at a time.
"""

import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from diffleet_worker.cache.digests import size_of
from diffleet_worker.cache.warm import touch

logger = logging.getLogger(__name__)
PARTIAL = ".partial"
ENTRY_NAME = re.compile(r"^[0-9a-f]{64}$")

Download = Callable[[str], bytes]  # an object's bytes by its key


class DatasetTier(StrEnum):
    DISK = "disk"
    S3 = "s3"


@dataclass(frozen=True)
class ListedObject:
    """One object of a dataset as S3 lists it."""

    key: str
    size_bytes: int
    etag: str


@dataclass(frozen=True)
class DatasetIdentity:
    bucket: str
    objects: tuple[ListedObject, ...]  # sorted by key

    @classmethod
    def of(cls, bucket: str, objects: Iterable[ListedObject]) -> "DatasetIdentity":
        return cls(bucket, tuple(sorted(objects, key=lambda item: item.key)))

    @property
    def key(self) -> str:
        listing = [[item.key, item.size_bytes, item.etag] for item in self.objects]
        return hashlib.sha256(json.dumps([self.bucket, listing]).encode()).hexdigest()

    @property
    def size_bytes(self) -> int:
        return sum(item.size_bytes for item in self.objects)

    def file_names(self) -> dict[str, str]:
        """Object key to file name in the entry (a key may hold '/' or '..': not a path)."""
        return {item.key: f"{index:05d}" for index, item in enumerate(self.objects)}

    def whole_in(self, folder: Path) -> bool:
        """Every object is in `folder` with its listed size."""
        names = self.file_names()
        try:
            return all(
                (folder / names[item.key]).stat().st_size == item.size_bytes
                for item in self.objects
            )
        except FileNotFoundError:
            return False


@dataclass(frozen=True)
class DatasetSource:
    """Where a read's objects come from, and how to get one's bytes by its key."""

    tier: DatasetTier
    read: Download


class DatasetCache:
    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.partial = root / PARTIAL
        self._sizes: OrderedDict[str, int] = OrderedDict()  # key to bytes, LRU first
        self._lock = threading.Lock()
        self._scan()

    def keys(self) -> list[str]:
        """Entries on disk, most recently used first."""
        with self._lock:
            return list(reversed(self._sizes))

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    @contextmanager
    def open(self, identity: DatasetIdentity, download: Download) -> Iterator[DatasetSource]:
        """The dataset's objects from its entry when it is there and whole; else from
        `download`, each written into a new entry that is kept when the block ends
        without an error having read every object."""
        with self._lock:
            key = identity.key
            folder = self.root / key
            if key in self._sizes:
                if identity.whole_in(folder):
                    self._sizes.move_to_end(key)
                    touch(folder)
                    yield DatasetSource(DatasetTier.DISK, self._reader(identity, folder))
                    return
                logger.warning("dataset cache: %s is partial; fetching it again", folder)
                self._delete(key)
            if identity.size_bytes > self.budget_bytes:
                yield DatasetSource(DatasetTier.S3, download)
                return
            self._make_room(identity.size_bytes)
            workdir = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=self.partial))
            try:
                staging = workdir / key
                staging.mkdir()
                yield DatasetSource(DatasetTier.S3, self._writer(identity, staging, download))
                if identity.whole_in(staging):
                    staging.replace(folder)
                    self._sizes[key] = identity.size_bytes
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def _reader(self, identity: DatasetIdentity, folder: Path) -> Download:
        names = identity.file_names()
        return lambda key: (folder / names[key]).read_bytes()

    def _writer(self, identity: DatasetIdentity, staging: Path, download: Download) -> Download:
        names = identity.file_names()

        def fetch(key: str) -> bytes:
            data = download(key)
            (staging / names[key]).write_bytes(data)
            return data

        return fetch

    def _make_room(self, size_bytes: int) -> None:
        """Deletes the least recently used entries until `size_bytes` more fit."""
        while self._sizes and sum(self._sizes.values()) + size_bytes > self.budget_bytes:
            key = next(iter(self._sizes))
            logger.info("dataset cache: evicted %s (%d bytes)", key[:12], self._sizes[key])
            self._delete(key)

    def _delete(self, key: str) -> None:
        """Renames the entry out of sight first, so a crash mid-delete leaves no half entry."""
        self._sizes.pop(key, None)
        doomed = Path(tempfile.mkdtemp(prefix="deleted-", dir=self.partial))
        try:
            (self.root / key).replace(doomed / key)
        except FileNotFoundError:
            logger.warning("dataset cache: %s was already gone", key[:12])
        shutil.rmtree(doomed, ignore_errors=True)

    def _scan(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir()
        found = [
            path
            for path in self.root.iterdir()
            if ENTRY_NAME.match(path.name) is not None and path.is_dir()
        ]
        for path in sorted(found, key=lambda path: path.stat().st_mtime_ns):
            self._sizes[path.name] = size_of(path)
        logger.info(
            "dataset cache: %d entries, %d of %d bytes in %s",
            len(self._sizes),
            sum(self._sizes.values()),
            self.budget_bytes,
            self.root,
        )
