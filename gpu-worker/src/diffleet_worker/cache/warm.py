"""Warm tier: artifacts on local disk under one root, least recently used first out when
a byte budget would be exceeded.

    <root>/<digest>.safetensors   a single-file model
    <root>/<digest>/              a diffusers folder
    <root>/.partial/              arrivals being written, entries being deleted
    <root>/datasets/              the dataset cache's (datasets.py), not the warm tier's

An arrival is written under .partial and renamed into place once its digest is verified
(a rename is atomic within one filesystem), so a crash leaves at most a leftover under
.partial, never a half entry that looks complete; an entry is deleted by first renaming
it into .partial, for the same reason. At start .partial is emptied and the entries are
indexed from the directory, ordered by modification time, which every use touches: the
LRU order survives a restart. One worker process owns a root.

An entry in use (`take`/`commit` until `done`) is never evicted; entries whose digests
the caller asks to keep (the hot models) go last.
"""

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from diffleet_core.resources.conditions import Reason
from diffleet_worker.cache.digests import size_of
from diffleet_worker.cache.errors import ModelCacheError
from diffleet_worker.cache.formats import SAFETENSORS_SUFFIX

logger = logging.getLogger(__name__)
ENTRY_NAME = re.compile(r"^(?P<digest>[0-9a-f]{64})(?P<suffix>\.safetensors)?$")
PARTIAL = ".partial"
DATASETS = "datasets"


@dataclass(eq=False)
class Entry:
    """One artifact on disk. `users` is the cache's bookkeeping."""

    digest: str
    path: Path
    size_bytes: int
    users: int = 0


class WarmCache:
    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.partial = root / PARTIAL
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._reserved = 0
        self._lock = threading.Lock()
        self._scan()

    def digests(self) -> list[str]:
        """Artifacts on disk, most recently used first."""
        with self._lock:
            return list(reversed(self._entries))

    @property
    def used_bytes(self) -> int:
        """Bytes of the entries plus space reserved for arrivals."""
        with self._lock:
            return self._used()

    def take(self, digest: str) -> Entry | None:
        """The entry, pinned and marked most recently used; None if not on disk (also
        when it was deleted behind the cache's back)."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            entry.users += 1
            self._entries.move_to_end(digest)
        try:
            touch(entry.path)
        except FileNotFoundError:
            logger.warning("warm cache: %s vanished", entry.path)
            with self._lock:
                if self._entries.get(digest) is entry:
                    del self._entries[digest]
            return None
        return entry

    def done(self, entry: Entry) -> None:
        with self._lock:
            entry.users -= 1

    def discard(self, entry: Entry) -> None:
        """Deletes an entry (found corrupt), whoever uses it."""
        with self._lock:
            if self._entries.get(entry.digest) is entry:
                del self._entries[entry.digest]
        self._delete(entry.path)

    def admit(self, digest: str, size_bytes: int, *, folder: bool, keep: Set[str]) -> "Arrival":
        """Reserves `size_bytes` for a new artifact, evicting idle entries (least recently
        used first, those in `keep` last), and returns where to write it."""
        if size_bytes > self.budget_bytes:
            raise ModelCacheError(
                Reason.FAILED,
                f"model {digest[:12]} needs {size_bytes} bytes, more than the worker's "
                f"disk cache budget of {self.budget_bytes} bytes",
                retryable=False,
            )
        with self._lock:
            idle = sum(entry.size_bytes for entry in self._entries.values() if not entry.users)
            busy = self._used() - idle
            if busy + size_bytes > self.budget_bytes:
                raise ModelCacheError(
                    Reason.FAILED,
                    f"disk cache full: model {digest[:12]} needs {size_bytes} bytes; {busy} "
                    f"of the {self.budget_bytes}-byte budget are in use or being downloaded",
                    retryable=True,
                )
            leaving = self._evict_idle(size_bytes, keep)
            self._reserved += size_bytes
        for entry in leaving:
            logger.info("warm cache: evicted %s (%d bytes)", entry.digest[:12], entry.size_bytes)
            self._delete(entry.path)
        workdir = Path(tempfile.mkdtemp(prefix=f"{digest[:12]}-", dir=self.partial))
        name = digest if folder else digest + SAFETENSORS_SUFFIX
        return Arrival(self, digest, size_bytes, workdir, workdir / name)

    def _commit(self, arrival: "Arrival") -> Entry:
        final = self.root / arrival.staging.name
        entry = Entry(arrival.digest, final, size_of(arrival.staging), users=1)
        arrival.staging.replace(final)
        touch(final)
        _fsync_dir(self.root)
        with self._lock:
            self._entries[arrival.digest] = entry
        return entry

    def _unreserve(self, size_bytes: int) -> None:
        with self._lock:
            self._reserved -= size_bytes

    def _used(self) -> int:
        return self._reserved + sum(entry.size_bytes for entry in self._entries.values())

    def _evict_idle(self, nbytes: int, keep: Set[str]) -> list[Entry]:
        idle = [entry for entry in self._entries.values() if entry.users == 0]
        idle.sort(key=lambda entry: entry.digest in keep)  # stable: LRU order otherwise
        leaving = []
        for entry in idle:
            if self._used() + nbytes <= self.budget_bytes:
                break
            del self._entries[entry.digest]
            leaving.append(entry)
        return leaving

    def _delete(self, path: Path) -> None:
        """Renames the entry out of sight first, so a crash mid-delete leaves no half entry."""
        doomed = Path(tempfile.mkdtemp(prefix="deleted-", dir=self.partial))
        try:
            path.replace(doomed / path.name)
        except FileNotFoundError:
            logger.warning("warm cache: %s was already gone", path)
        shutil.rmtree(doomed, ignore_errors=True)

    def _scan(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir()
        found = []
        for path in self.root.iterdir():
            match = ENTRY_NAME.match(path.name)
            if match is None or path.is_dir() != (match["suffix"] is None):
                if path.name not in (PARTIAL, DATASETS):
                    logger.warning("warm cache: ignoring %s (not a cache entry)", path)
                continue
            found.append((path.stat().st_mtime_ns, Entry(match["digest"], path, size_of(path))))
        for _, entry in sorted(found, key=lambda pair: pair[0]):
            self._entries[entry.digest] = entry
        logger.info(
            "warm cache: %d entries, %d of %d bytes in %s",
            len(self._entries),
            self._used(),
            self.budget_bytes,
            self.root,
        )


class Arrival:
    """Reserved space and a private place (`staging`) to write one artifact: a file for a
    single-file model, a directory for a folder. `commit` renames it into the cache and
    returns the entry, pinned; leaving the `with` block without committing (an error, a
    digest mismatch) deletes what was written and frees the reservation."""

    def __init__(
        self, cache: WarmCache, digest: str, size_bytes: int, workdir: Path, staging: Path
    ) -> None:
        self.cache = cache
        self.digest = digest
        self.size_bytes = size_bytes
        self.workdir = workdir
        self.staging = staging
        self._open = True

    def commit(self) -> Entry:
        entry = self.cache._commit(self)
        self._close()
        return entry

    def _close(self) -> None:
        if self._open:
            self._open = False
            self.cache._unreserve(self.size_bytes)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Arrival":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close()


def touch(path: Path) -> None:
    """Records a use in the modification time (nanoseconds: finer than the coarse clock
    that a plain touch uses), which orders entries at the next start."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
