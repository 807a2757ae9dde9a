"""The worker's Lease: liveness and inventory for the operator (diffleet_core.fleet)."""

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.fleet import INVENTORY_ANNOTATION, POOL_LABEL, WORKER_LABEL, WorkerInventory

logger = logging.getLogger(__name__)


def placement_state(inventory: WorkerInventory) -> tuple[object, ...]:
    """What the operator places by, beyond the jobs in flight: a change of it is announced
    at once rather than at the next heartbeat. Sets, not lists: the hot tier's
    recency order moves with every job, and the heartbeat carries it."""
    return (
        frozenset(inventory.hot_models),
        frozenset(inventory.warm_models),
        inventory.concurrency,
        inventory.draining,
    )


class Announcer:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        lease_seconds: float,
        request_timeout: float,
    ) -> None:
        self._api = api
        self._leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.lease_seconds = lease_seconds
        self.timeout = request_timeout

    async def announce(self, inventory: WorkerInventory) -> None:
        """Creates or renews the Lease with the current inventory."""
        now = datetime.now(UTC)
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                labels={WORKER_LABEL: "true", POOL_LABEL: inventory.pool},
                annotations={
                    INVENTORY_ANNOTATION: json.dumps(
                        inventory.model_dump(mode="json", by_alias=True)
                    )
                },
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.name,
                lease_duration_seconds=max(int(self.lease_seconds), 1),
                renew_time=now,
            ),
        )
        try:
            # _content_type is a runtime keyword that the bundled stubs do not declare.
            await self._leases.patch_namespaced_lease(  # type: ignore[call-arg]
                self.name,
                self.namespace,
                self._api.sanitize_for_serialization(lease),
                _content_type="application/merge-patch+json",
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status != 404:
                raise
            await self._leases.create_namespaced_lease(
                self.namespace, lease, _request_timeout=self.timeout
            )

    async def keep(
        self,
        inventory: Callable[[], WorkerInventory],
        every: float,
        renewed: Callable[[bool], None],
        check_every: float,
    ) -> None:
        """Renews the Lease until cancelled: a heartbeat every `every` seconds (jittered,
        so that a fleet started together does not renew in step), and within
        `check_every` of a change of what placement reads (`placement_state`). Jobs in
        flight alone renew nothing: the operator follows them itself, from its dispatches
        and the results. `renewed` hears whether each renewal went through; a failed one
        (the API server away) is tried again at the next heartbeat, with the inventory of
        then."""
        announced: tuple[object, ...] | None = None
        due = 0.0
        first = True
        while True:
            current = inventory()
            state = placement_state(current)
            if time.monotonic() >= due or state != announced:
                try:
                    await self.announce(current)
                except Exception as error:  # noqa: BLE001 - any failure is retried next period
                    logger.warning("Lease renewal failed: %r", error)
                    renewed(False)
                else:
                    renewed(True)
                announced = state
                # The first period is a random part of one: workers started at once
                # spread their heartbeats over the period instead of writing together.
                share = random.uniform(0.1, 1.0) if first else random.uniform(0.9, 1.0)  # noqa: S311
                due, first = time.monotonic() + every * share, False
            await asyncio.sleep(max(min(check_every, due - time.monotonic()), 0.0))

    async def release(self) -> None:
        try:
            await self._leases.delete_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status != 404:
                logger.warning("could not delete the Lease: %s", error.reason)
