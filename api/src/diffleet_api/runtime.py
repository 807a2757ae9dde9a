"""Everything a request handler needs, opened at startup and closed at shutdown."""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from diffleet_api.db import Pool
from diffleet_api.job_models import ModelKind
from diffleet_api.kube import Kube
from diffleet_api.settings import ApiSettings
from diffleet_core.broker import Broker
from diffleet_core.remembered import Remembered
from diffleet_core.settings import Settings


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
