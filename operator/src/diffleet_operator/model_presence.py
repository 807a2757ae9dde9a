"""ModelCache status from the fleet: which workers hold each model hot (in GPU memory)
and warm (on local disk), as their Leases say.

Housekeeping refreshes it (with pre-warming, at most every `MODELS_EVERY_SECONDS`) and
a ModelCache is written only when its presence changed, so an idle fleet writes nothing.
Workers are named up to `MAX_NAMED_WORKERS` per list; the replica counts are always
exact.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.resources.model_cache import ModelCachePhase, ModelCacheStatus
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.quarantine import Loop
from diffleet_operator.runtime import Runtime

logger = logging.getLogger(__name__)

MAX_NAMED_WORKERS = 32


@dataclass(frozen=True)
class Presence:
    hot: frozenset[str] = frozenset()
    warm: frozenset[str] = frozenset()

    @property
    def hot_named(self) -> list[str]:
        return sorted(self.hot)[:MAX_NAMED_WORKERS]

    @property
    def warm_named(self) -> list[str]:
        return sorted(self.warm)[:MAX_NAMED_WORKERS]

    def status(self) -> dict[str, Any]:
        """The merge patch for the ModelCache's status."""
        return {
            "hotWorkers": self.hot_named,
            "warmWorkers": self.warm_named,
            "hotReplicas": len(self.hot),
            "warmReplicas": len(self.warm),
        }

    def shown_by(self, status: ModelCacheStatus) -> bool:
        """The status already says this (so nothing needs writing)."""
        return (
            status.hot_replicas == len(self.hot)
            and status.warm_replicas == len(self.warm)
            and (status.hot_workers or []) == self.hot_named
            and (status.warm_workers or []) == self.warm_named
        )


def presence_by_digest(fleet: Iterable[WorkerView]) -> dict[str, Presence]:
    hot: defaultdict[str, set[str]] = defaultdict(set)
    warm: defaultdict[str, set[str]] = defaultdict(set)
    for worker in fleet:
        for digest in worker.hot_models:
            hot[digest].add(worker.worker_id)
        for digest in worker.warm_models:
            warm[digest].add(worker.worker_id)
    return {
        digest: Presence(frozenset(hot[digest]), frozenset(warm[digest]))
        for digest in hot.keys() | warm.keys()
    }


class ModelPresence:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def refresh(self, fleet: list[WorkerView], models: list[Mapping[str, Any]]) -> None:
        by_digest = presence_by_digest(fleet)
        for body in models:
            try:
                await self._write(body, by_digest)
            except Exception as error:  # noqa: BLE001 - one model never stops the others
                self.rt.quarantine.resource_failed(Loop.HOUSEKEEPING, body, error)

    async def _write(self, body: Mapping[str, Any], by_digest: dict[str, Presence]) -> None:
        status = ModelCacheStatus.model_validate(body.get("status") or {})
        if status.phase is not ModelCachePhase.READY or status.digest is None:
            return
        presence = by_digest.get(status.digest, Presence())
        if presence.shown_by(status):
            return
        meta = body["metadata"]
        try:
            await self.rt.kube.patch_model_cache_status(
                meta["namespace"], meta["name"], presence.status()
            )
        except ApiException as error:
            if error.status != 404:
                logger.warning(
                    "ModelCache %s: presence not written: %s", meta["name"], error.reason
                )
