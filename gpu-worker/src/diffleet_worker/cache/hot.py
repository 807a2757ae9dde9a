"""Hot tier: loaded models (pipelines) resident in memory, least recently used first out
when a byte budget would be exceeded; models the caller asks to keep (the operator's
`keep_hot`: jobs waiting in the queue need them) go only after every other idle model.

A model in use by a job is pinned (`take` or `put` until `done`) and never released
under it: evicting a pinned model only drops it from the cache, and `release` runs when
its last user is done. `release` (given by the runner) frees the model's memory; it is
called outside the lock. Thread-safe: jobs load in worker threads while the event loop
reads `digests()` for the Lease.
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class Slot(Generic[T]):
    """One loaded model. `users` and `evicted` are the cache's bookkeeping."""

    digest: str
    value: T
    size_bytes: int
    users: int = 0
    evicted: bool = False


class HotCache(Generic[T]):
    def __init__(
        self,
        budget_bytes: int,
        size_of: Callable[[T], int],
        release: Callable[[T], None],
    ) -> None:
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._release = release
        self._slots: OrderedDict[str, Slot[T]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def digests(self) -> list[str]:
        """Resident models, most recently used first."""
        with self._lock:
            return list(reversed(self._slots))

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used()

    def take(self, digest: str) -> Slot[T] | None:
        """The resident model, pinned and marked most recently used; None if not resident."""
        with self._lock:
            slot = self._slots.get(digest)
            if slot is not None:
                slot.users += 1
                self._slots.move_to_end(digest)
            return slot

    def put(self, digest: str, value: T, keep: Collection[str] = ()) -> Slot[T]:
        """Makes a freshly loaded model resident, pinned, and evicts idle models (those not
        in `keep` first, least recently used first) until the budget holds. A model larger
        than what is free stays resident over budget: it is needed now."""
        slot = Slot(digest, value, self._size_of(value), users=1)
        with self._lock:
            leaving = self._drop(digest)
            self._slots[digest] = slot
            leaving += self._evict_idle(0, keep)
            if self._used() > self.budget_bytes:
                logger.warning(
                    "hot cache over budget: %d of %d bytes (models in use are kept)",
                    self._used(),
                    self.budget_bytes,
                )
        self._release_all(leaving)
        return slot

    def done(self, slot: Slot[T]) -> None:
        """Unpins a model taken or put; releases it if it was evicted meanwhile."""
        with self._lock:
            slot.users -= 1
            gone = slot.evicted and slot.users == 0
        if gone:
            self._release_all([slot])

    def make_room(self, nbytes: int, keep: Collection[str] = ()) -> list[str]:
        """Evicts idle models, those not in `keep` first, least recently used first, until
        `nbytes` more would fit (or nothing idle is left). Returns the evicted digests."""
        with self._lock:
            leaving = self._evict_idle(nbytes, keep)
        self._release_all(leaving)
        return [slot.digest for slot in leaving]

    def evict(self, digest: str) -> bool:
        """Drops a model (e.g. after an out-of-memory error). A model in use is released
        when its last user is done. False if it was not resident."""
        with self._lock:
            resident = digest in self._slots
            leaving = self._drop(digest)
        self._release_all(leaving)
        return resident

    def evict_all(self) -> list[str]:
        """Drops every model; those in use are released when their users are done."""
        with self._lock:
            digests = list(self._slots)
        return [digest for digest in digests if self.evict(digest)]

    def _used(self) -> int:
        return sum(slot.size_bytes for slot in self._slots.values())

    def _drop(self, digest: str) -> list[Slot[T]]:
        """Removes a slot; returns it if nobody uses it (to be released now)."""
        slot = self._slots.pop(digest, None)
        if slot is None:
            return []
        slot.evicted = True
        return [slot] if slot.users == 0 else []

    def _evict_idle(self, nbytes: int, keep: Collection[str]) -> list[Slot[T]]:
        leaving: list[Slot[T]] = []
        ranked = sorted(self._slots.items(), key=lambda item: item[0] in keep)  # stable: LRU
        for digest, slot in ranked:
            if self._used() + nbytes <= self.budget_bytes:
                break
            if slot.users == 0:
                del self._slots[digest]
                slot.evicted = True
                leaving.append(slot)
        return leaving

    def _release_all(self, slots: list[Slot[T]]) -> None:
        for slot in slots:
            logger.info("hot cache: released %s (%d bytes)", slot.digest[:12], slot.size_bytes)
            self._release(slot.value)
