"""One active operator: leader election on a coordination.k8s.io Lease, as client-go's
leaderelection does.

The leader renews the Lease every `renew_seconds`. Expiry is judged as client-go judges
it: by how long ago *this process* saw the Lease's record last change (its own
monotonic clock, `observed_at`), never by comparing the holder's renewTime with the
local clock, so clock skew between nodes cannot make two leaders. A standby takes the
Lease over once its record has not changed for the holder's lease duration. A leader
that cannot renew within the renew deadline (two thirds of the duration), or that sees
another holder, stops leading and stands by again in the same process.

kopf's own peering is not used for this: operators of equal priority both freeze, and
it pauses handlers but not the operator's RabbitMQ consumers.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_operator.kube import Kube

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


def _record(spec: Any) -> tuple[object, ...]:
    """What identifies one state of the Lease: any renewal or takeover changes it."""
    return (
        spec.holder_identity,
        spec.renew_time,
        spec.acquire_time,
        spec.lease_duration_seconds,
        spec.lease_transitions,
    )


class LeaderElection:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        renew_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration_seconds
        self.renew_seconds = renew_seconds
        self.renew_deadline = duration_seconds * 2 / 3
        self.clock = clock
        self.lost = False
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._holder: str | None = None
        # When the API server last answered a Lease read (local clock), for readiness.
        self.reached_at: float | None = None

    async def acquire(self, shutdown: asyncio.Event) -> bool:
        """Returns True once this process holds the Lease, False if `shutdown` is set
        first. Failures of the API server are logged and tried again."""
        logged = False
        while not shutdown.is_set():
            try:
                if await self.try_acquire_or_renew():
                    self.lost = False
                    logger.info(
                        "leading: holding Lease %s/%s as %s",
                        self.namespace,
                        self.name,
                        self.identity,
                    )
                    return True
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
                logger.warning("leader election: Lease not read or written: %s", error)
            if not logged:
                logger.info("standing by: Lease %s/%s is held", self.namespace, self.name)
                logged = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), timeout=self.renew_seconds)
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renews the Lease; sets `lost` and `stop` when leadership is lost."""
        renewed = self.clock()
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                held = await self.try_acquire_or_renew()
            except Exception:
                logger.exception("Lease renewal failed")
                held = False
            if held:
                renewed = self.clock()
                continue
            taken = self._holder not in (None, "", self.identity)
            if taken or self.clock() - renewed > self.renew_deadline:
                why = f"held by {self._holder}" if taken else "not renewed in time"
                logger.error("leadership lost: Lease %s; standing by", why)
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
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
            logger.warning("could not release the Lease: %s", error)

    async def try_acquire_or_renew(self) -> bool:
        """One round, as client-go's tryAcquireOrRenew: True if this process holds the
        Lease afterwards."""
        coordination = self.kube.coordination
        try:
            lease = await coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.kube.timeout
            )
        except ApiException as error:
            if error.status != 404:
                raise
            return await self._create()
        spec = lease.spec
        self._observe(spec)
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self.duration
        if holder and holder != self.identity and self._observed_at + duration > self.clock():
            return False
        now = datetime.now(UTC)  # for people reading the Lease; never compared
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.duration)
        try:
            await coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.kube.timeout
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        self._observe(spec)
        return True

    def reaches_api_server(self) -> bool:
        """The API server answered a Lease read within the renew deadline."""
        return self.reached_at is not None and self.clock() - self.reached_at <= self.renew_deadline

    def _observe(self, spec: Any) -> None:
        """Notes the Lease's record, and when it was seen to change (local clock)."""
        record = _record(spec)
        self.reached_at = self.clock()
        self._holder = spec.holder_identity
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()

    async def _create(self) -> bool:
        now = datetime.now(UTC)
        spec = client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.duration),
            acquire_time=now,
            renew_time=now,
            lease_transitions=0,
        )
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=spec
        )
        try:
            await self.kube.coordination.create_namespaced_lease(
                self.namespace, lease, _request_timeout=self.kube.timeout
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        self._observe(spec)
        return True
