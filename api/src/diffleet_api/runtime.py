"""Everything a request handler needs, opened at startup and closed at shutdown."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aio_pika.abc import AbstractRobustConnection

from diffleet_api.db import Pool
from diffleet_api.job_models import ModelKind
from diffleet_api.kube import Kube
from diffleet_api.settings import ApiSettings
from diffleet_core.broker import Broker
from diffleet_core.settings import Settings

V = TypeVar("V")


@dataclass
class Remembered(Generic[V]):
    """Answers of look-ups by namespace and name (a ModelCache's kind, a namespace's
    policy), remembered for `seconds`, absent ones too (a platform model is looked for in
    the tenant's namespace first). Concurrent askers share one lookup; a failed lookup is
    not remembered."""

    seconds: float
    max_entries: int = 4096
    _known: dict[tuple[str, str], tuple[float, "asyncio.Future[V]"]] = field(default_factory=dict)

    async def get(self, namespace: str, name: str, lookup: Callable[[], Awaitable[V]]) -> V:
        key = (namespace, name)
        entry = self._known.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._make_room()
            entry = (time.monotonic() + self.seconds, asyncio.ensure_future(lookup()))
            self._known[key] = entry
        try:
            # Shielded: one asker's cancellation does not cancel the others' lookup.
            return await asyncio.shield(entry[1])
        except Exception:
            if self._known.get(key) is entry:
                del self._known[key]
            raise

    def forget(self, namespace: str, name: str) -> None:
        """Drops what is remembered of an object (this process has just created it)."""
        self._known.pop((namespace, name), None)

    def _make_room(self) -> None:
        """Forgets expired entries once there are many (names asked for are unbounded)."""
        if len(self._known) < self.max_entries:
            return
        now = time.monotonic()
        self._known = {key: entry for key, entry in self._known.items() if entry[0] >= now}
        if len(self._known) >= self.max_entries:
            self._known.clear()


@dataclass
class StreamSlots:
    """Event streams (SSE) open per tenant in this process. Per process, not shared by
    replicas (N replicas allow a tenant N times the limit): a slot lives exactly as long
    as its connection, and a replica that dies takes its slots with it."""

    _open: dict[str, int] = field(default_factory=dict)

    def take(self, tenant_id: str, limit: int) -> bool:
        """Takes a slot for a new stream; False when the tenant already has `limit` open."""
        held = self._open.get(tenant_id, 0)
        if held >= limit:
            return False
        self._open[tenant_id] = held + 1
        return True

    def give_back(self, tenant_id: str) -> None:
        held = self._open.pop(tenant_id, 0) - 1
        if held > 0:
            self._open[tenant_id] = held


@dataclass
class Runtime:
    settings: ApiSettings
    platform: Settings
    pool: Pool
    kube: Kube
    broker: Broker
    amqp: AbstractRobustConnection
    """For per-request subscriptions (live progress), each on a channel of its own."""
    s3: Any
    # A ModelCache's kind, by namespace and name (None: no such ModelCache).
    models: Remembered[ModelKind | None]
    # A namespace's diffleet-policy data, by namespace and name (None: no such ConfigMap).
    policies: Remembered[Mapping[str, str] | None]
    background: set[asyncio.Task[None]] = field(default_factory=set)
    streams: StreamSlots = field(default_factory=StreamSlots)
