"""Answers of look-ups of Kubernetes objects by namespace and name, remembered for a
while: the API and the operator read the same objects (ModelCaches, content policies,
style presets) far more often than they change."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class Remembered(Generic[V]):
    """Answers remembered for `seconds`, absent ones too (a platform object is looked for
    in the tenant's namespace first). Concurrent askers share one lookup; a failed lookup
    is not remembered."""

    seconds: float
    max_entries: int = 4096
    clock: Callable[[], float] = time.monotonic
    _known: dict[tuple[str, str], tuple[float, "asyncio.Future[V]"]] = field(default_factory=dict)

    async def get(self, namespace: str, name: str, lookup: Callable[[], Awaitable[V]]) -> V:
        key = (namespace, name)
        entry = self._known.get(key)
        if entry is None or entry[0] < self.clock():
            self._make_room()
            entry = (self.clock() + self.seconds, asyncio.ensure_future(lookup()))
            self._known[key] = entry
        try:
            # Shielded: one asker's cancellation does not cancel the others' lookup.
            return await asyncio.shield(entry[1])
        except Exception:
            if self._known.get(key) is entry:
                del self._known[key]
            raise

    def last(self, namespace: str, name: str) -> "asyncio.Future[V] | None":
        """The last finished lookup of an object, however old (done: its result() is the
        answer); None when none has finished."""
        entry = self._known.get((namespace, name))
        return entry[1] if entry is not None and entry[1].done() else None

    def forget(self, namespace: str, name: str) -> None:
        """Drops what is remembered of an object (this process has just created it)."""
        self._known.pop((namespace, name), None)

    def _make_room(self) -> None:
        """Forgets expired entries once there are many (names asked for are unbounded)."""
        if len(self._known) < self.max_entries:
            return
        now = self.clock()
        self._known = {key: entry for key, entry in self._known.items() if entry[0] >= now}
        if len(self._known) >= self.max_entries:
            self._known.clear()
