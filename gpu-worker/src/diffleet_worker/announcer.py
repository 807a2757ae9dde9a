"""The worker's Lease: liveness and inventory for the operator (diffleet_core.fleet)."""

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.fleet import INVENTORY_ANNOTATION, POOL_LABEL, WORKER_LABEL, WorkerInventory

logger = logging.getLogger(__name__)


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
    ) -> None:
        """Renews the Lease until cancelled, telling `renewed` whether each renewal went
        through; a failed one (the API server away) is retried next period."""
        while True:
            try:
                await self.announce(inventory())
            except Exception as error:  # noqa: BLE001 - any failure is retried next period
                logger.warning("Lease renewal failed: %r", error)
                renewed(False)
            else:
                renewed(True)
            await asyncio.sleep(every)

    async def release(self) -> None:
        try:
            await self._leases.delete_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status != 404:
                logger.warning("could not delete the Lease: %s", error.reason)
