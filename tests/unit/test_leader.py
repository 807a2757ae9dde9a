"""Leader election judges a Lease's expiry by the local clock only: how long ago this
process saw the Lease's record change (as client-go does), never by the holder's
renewTime, which another node's clock wrote. A fake clock and an in-memory Lease API
here; tests/operator/test_faults.py runs two real operators."""

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_operator.kube import Kube
from diffleet_operator.leader import LeaderElection

DURATION = 15.0
WALL = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """One Lease, read and replaced as the API server would (copies, 404, 409)."""

    def __init__(self) -> None:
        self.lease: client.V1Lease | None = None
        self.failing = False

    async def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> client.V1Lease:
        if self.failing:
            raise ApiException(status=503, reason="Service Unavailable")
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.lease)

    async def replace_namespaced_lease(
        self, name: str, namespace: str, body: client.V1Lease, **_: Any
    ) -> None:
        self.lease = copy.deepcopy(body)

    async def create_namespaced_lease(self, namespace: str, body: client.V1Lease, **_: Any) -> None:
        if self.lease is not None:
            raise ApiException(status=409, reason="Conflict")
        self.lease = copy.deepcopy(body)

    def hold_as(self, holder: str, renew_time: datetime) -> None:
        """Another operator writes the Lease (its clock wrote `renew_time`)."""
        self.lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name="leader", namespace="fleet"),
            spec=client.V1LeaseSpec(
                holder_identity=holder,
                lease_duration_seconds=int(DURATION),
                acquire_time=renew_time,
                renew_time=renew_time,
                lease_transitions=3,
            ),
        )

    @property
    def holder(self) -> str | None:
        assert self.lease is not None
        holder: str | None = self.lease.spec.holder_identity
        return holder


def election(leases: FakeLeases, clock: FakeClock, identity: str = "me") -> LeaderElection:
    kube = cast(Kube, type("FakeKube", (), {"coordination": leases, "timeout": 1.0})())
    return LeaderElection(kube, "fleet", "leader", identity, DURATION, 0.01, clock=clock)


def test_a_holder_whose_clock_is_behind_keeps_the_lease_while_it_renews() -> None:
    """Its renewTime is an hour in the past by our clock, but it keeps changing."""
    leases, clock = FakeLeases(), FakeClock()
    standby = election(leases, clock)
    behind = WALL - timedelta(hours=1)
    for second in range(0, 60, 2):
        leases.hold_as("other", behind + timedelta(seconds=second))
        clock.now = 100.0 + second
        assert asyncio.run(standby.try_acquire_or_renew()) is False
    assert leases.holder == "other"


def test_a_holder_whose_clock_is_ahead_is_taken_over_once_its_lease_stops_changing() -> None:
    """Its renewTime is a day in the future: only the local clock decides."""
    leases, clock = FakeLeases(), FakeClock()
    standby = election(leases, clock)
    leases.hold_as("other", WALL + timedelta(days=1))
    assert asyncio.run(standby.try_acquire_or_renew()) is False
    clock.now += DURATION - 1
    assert asyncio.run(standby.try_acquire_or_renew()) is False
    clock.now += 2
    assert asyncio.run(standby.try_acquire_or_renew()) is True
    assert leases.lease is not None
    assert leases.holder == "me"
    assert leases.lease.spec.lease_transitions == 4


def test_a_released_lease_is_taken_at_once() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leases.hold_as("", WALL)
    assert asyncio.run(election(leases, clock).try_acquire_or_renew()) is True
    assert leases.holder == "me"


def test_no_lease_is_created_by_the_first_candidate_only() -> None:
    leases, clock = FakeLeases(), FakeClock()
    assert asyncio.run(election(leases, clock, "first").try_acquire_or_renew()) is True
    assert asyncio.run(election(leases, clock, "second").try_acquire_or_renew()) is False
    assert leases.holder == "first"


def test_a_leader_that_sees_another_holder_stands_by_at_once() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader = election(leases, clock)

    async def scenario() -> bool:
        assert await leader.try_acquire_or_renew()
        leases.hold_as("intruder", WALL)
        stop = asyncio.Event()
        await asyncio.wait_for(leader.hold(stop), timeout=5)
        return stop.is_set()

    assert asyncio.run(scenario()) is True
    assert leader.lost is True


def test_a_leader_that_cannot_renew_within_the_deadline_stands_by() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader = election(leases, clock)

    async def scenario() -> tuple[bool, float]:
        assert await leader.try_acquire_or_renew()
        leases.failing = True
        stop = asyncio.Event()
        started = clock.now

        async def time_passes() -> None:
            while not stop.is_set():
                clock.now += 1
                await asyncio.sleep(0.005)

        ticking = asyncio.create_task(time_passes())
        await asyncio.wait_for(leader.hold(stop), timeout=5)
        ticking.cancel()
        return stop.is_set(), clock.now - started

    stopped, after = asyncio.run(scenario())
    assert stopped is True
    assert leader.lost is True
    # Not before the renew deadline (two thirds of the duration), and not long after.
    assert DURATION * 2 / 3 <= after <= DURATION


def test_acquire_returns_false_on_shutdown() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leases.hold_as("other", WALL)
    standby = election(leases, clock)

    async def scenario() -> bool:
        shutdown = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, shutdown.set)
        return await asyncio.wait_for(standby.acquire(shutdown), timeout=5)

    assert asyncio.run(scenario()) is False
