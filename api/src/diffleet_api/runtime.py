"""Everything a request handler needs, opened at startup and closed at shutdown."""

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from diffleet_api.db import Pool
from diffleet_api.kube import Kube
from diffleet_api.settings import ApiSettings
from diffleet_core.broker import Broker
from diffleet_core.resources.model_cache import BaseModelFamily
from diffleet_core.settings import Settings


@dataclass
class ModelFamilies:
    """Base-model family of ModelCaches, remembered briefly (pricing asks for every job)."""

    seconds: float
    _known: dict[tuple[str, str], tuple[float, BaseModelFamily]] = field(default_factory=dict)

    def get(self, namespace: str, name: str) -> BaseModelFamily | None:
        entry = self._known.get((namespace, name))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def remember(self, namespace: str, name: str, family: BaseModelFamily) -> None:
        self._known[(namespace, name)] = (time.monotonic() + self.seconds, family)


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
    families: ModelFamilies
    background: set[asyncio.Task[None]] = field(default_factory=set)
