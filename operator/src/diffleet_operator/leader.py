"""One active operator: leader election on a coordination.k8s.io Lease, as client-go's
leaderelection does. The leader renews the Lease every few seconds; a standby takes it
over once it has not been renewed for its duration. A leader that cannot renew in time
stops (the process exits and restarts as a standby), so two never act at once.

kopf's own peering is not used for this: operators of equal priority both freeze, and
it pauses handlers but not the operator's RabbitMQ consumers.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_operator.kube import Kube

logger = logging.getLogger(__name__)


class LeaderElection:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        renew_seconds: float,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = timedelta(seconds=duration_seconds)
        self.renew_seconds = renew_seconds
        self.lost = False

    async def acquire(self) -> None:
        """Returns once this process holds the Lease."""
        logged = False
        while not await self._try_hold():
            if not logged:
                logger.info("standing by: Lease %s/%s is held", self.namespace, self.name)
                logged = True
            await asyncio.sleep(self.renew_seconds)
        logger.info("leading: holding Lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def hold(self, stop: asyncio.Event) -> None:
        """Renews the Lease; sets `stop` when leadership is lost."""
        renewed = datetime.now(UTC)
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                held = await self._try_hold()
            except Exception:
                logger.exception("Lease renewal failed")
                held = False
            if held:
                renewed = datetime.now(UTC)
            elif datetime.now(UTC) - renewed > self.duration * 2 / 3:
                logger.error("leadership lost: Lease not renewed in time")
                self.lost = True
                stop.set()
                return

    async def release(self) -> None:
        """Gives the Lease up at shutdown, so a standby takes over at once."""
        try:
            lease = await self.kube.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.kube.timeout
            )
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = ""
                await self.kube.coordination.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=self.kube.timeout
                )
        except ApiException as error:
            logger.warning("could not release the Lease: %s", error.reason)

    async def _try_hold(self) -> bool:
        coordination = self.kube.coordination
        now = datetime.now(UTC)
        try:
            lease = await coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.kube.timeout
            )
        except ApiException as error:
            if error.status != 404:
                raise
            return await self._create(now)
        spec = lease.spec
        holder = spec.holder_identity
        if holder and holder != self.identity and spec.renew_time is not None:
            expires = spec.renew_time + timedelta(seconds=spec.lease_duration_seconds or 0)
            if expires > now:
                return False
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.duration.total_seconds())
        try:
            await coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.kube.timeout
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def _create(self, now: datetime) -> bool:
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.duration.total_seconds()),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            await self.kube.coordination.create_namespaced_lease(
                self.namespace, lease, _request_timeout=self.kube.timeout
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True
