"""Pre-warming: keeps each Ready ModelCache hot (in GPU memory) on at least
`spec.warm.replicas` workers, before any job asks for it.

Housekeeping runs it after the presence refresh, on the same fleet snapshot. For a
model short of its replicas it sends WarmModel orders (control exchange) to as many
eligible workers as are missing, where jobs would run it (the model's pools, enough
VRAM, not draining): first those that have it on local disk, then the least loaded. An
order is awaited `ORDER_SECONDS` before that worker may be asked again, so a worker that
cannot hold the model (its hot tier is full of models in use) is not asked on every
sweep. The hot tier's own budget still decides what stays: a pre-warmed model can be
evicted by the models jobs need, and is warmed again on a later sweep. Each order is an
Event on the ModelCache (reason Prewarming).
"""

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffleet_core.messages import WarmModel
from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.quarantine import Loop
from diffleet_operator.queue.admission import ResolvedModel, ready_model
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.eligibility import (
    PoolCatalog,
    Requirements,
    requirements,
    worker_fits,
)
from diffleet_operator.scheduler.placement import least_loaded

logger = logging.getLogger(__name__)

ORDER_SECONDS = 120.0
EVENT_REASON = "Prewarming"


@dataclass(frozen=True)
class WarmTarget:
    """A model to keep hot (`needs.model_digest`), on how many workers, and where it may
    run."""

    replicas: int
    needs: Requirements


def target_of(model: ResolvedModel) -> WarmTarget:
    return WarmTarget(replicas=model.spec.warm.replicas, needs=requirements(model))


def workers_to_warm(
    target: WarmTarget, fleet: list[WorkerView], ordered: set[str], pools: PoolCatalog
) -> list[WorkerView]:
    """The workers to ask now: as many as the model lacks hot replicas, counting the
    orders still awaited (`ordered`: worker ids), among the eligible workers that do not
    hold it hot; those with it on disk first, then the least loaded."""
    digest = target.needs.model_digest
    hot = {worker.worker_id for worker in fleet if digest in worker.hot_models}
    awaited = ordered - hot
    missing = target.replicas - len(hot) - len(awaited)
    if missing <= 0:
        return []
    candidates = [
        worker
        for worker in fleet
        if worker_fits(worker, target.needs, pools)
        and worker.worker_id not in hot
        and worker.worker_id not in ordered
    ]
    candidates.sort(key=lambda worker: (digest not in worker.warm_models, *least_loaded(worker)))
    return candidates[:missing]


class Prewarmer:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # (digest, worker id) -> when the order was sent (monotonic seconds).
        self._orders: dict[tuple[str, str], float] = {}

    async def reconcile(self, fleet: list[WorkerView], models: list[Mapping[str, Any]]) -> None:
        now = time.monotonic()
        self._orders = {
            key: sent for key, sent in self._orders.items() if now - sent < ORDER_SECONDS
        }
        for body in models:
            try:
                await self._warm(body, fleet, now)
            except Exception as error:  # noqa: BLE001 - one model never stops the others
                self.rt.quarantine.resource_failed(Loop.PREWARM, body, error)

    async def _warm(self, body: Mapping[str, Any], fleet: list[WorkerView], now: float) -> None:
        model = ready_model(body)
        if not isinstance(model, ResolvedModel) or model.spec.warm.replicas == 0:
            return
        target = target_of(model)
        ordered = {worker for digest, worker in self._orders if digest == model.ref.digest}
        chosen = workers_to_warm(target, fleet, ordered, self.rt.pools)
        if not chosen:
            return
        order = WarmModel(model=model.ref)
        exchange = self.rt.broker.topology.control_exchange
        for worker in chosen:
            await self.rt.broker.publish_to_exchange(exchange, worker.worker_id, order)
            self._orders[(model.ref.digest, worker.worker_id)] = now
        names = ", ".join(worker.worker_id for worker in chosen)
        logger.info("ModelCache %s: warming on %s", model.ref.name, names)
        self.rt.kube.post_event(
            body, EVENT_REASON, f"loading into GPU memory on {names} (spec.warm.replicas)"
        )
