"""The operator's readiness report: ready while the API server answered a Lease read
within the renew deadline and, while it leads, RabbitMQ is connected."""

from dataclasses import dataclass
from typing import cast

import pytest

from diffleet_core.broker import Broker
from diffleet_operator.kube import Kube
from diffleet_operator.leader import LeaderElection
from diffleet_operator.readiness import Readiness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeBroker:
    connected: bool


def readiness(clock: Clock, *, read_ago: float | None, rabbitmq: bool | None) -> Readiness:
    election = LeaderElection(cast(Kube, None), "fleet", "op", "me", 15, 2, clock=clock)
    election.reached_at = None if read_ago is None else clock.now - read_ago
    ready = Readiness(election)
    if rabbitmq is not None:
        ready.broker = cast(Broker, FakeBroker(connected=rabbitmq))
    return ready


@pytest.mark.parametrize(
    ("read_ago", "rabbitmq", "expected"),
    [
        pytest.param(
            1.0, True, {"apiServer": True, "leading": True, "rabbitmq": True, "ready": True},
            id="leader with both",
        ),
        pytest.param(
            1.0, False, {"apiServer": True, "leading": True, "rabbitmq": False, "ready": False},
            id="leader without RabbitMQ",
        ),
        pytest.param(
            11.0, True, {"apiServer": False, "leading": True, "rabbitmq": True, "ready": False},
            id="leader past the renew deadline (10 s) without the API server",
        ),
        pytest.param(
            1.0, None, {"apiServer": True, "leading": False, "ready": True},
            id="standby needs no RabbitMQ",
        ),
        pytest.param(
            None, None, {"apiServer": False, "leading": False, "ready": False},
            id="never reached the API server",
        ),
    ],
)  # fmt: skip
def test_readiness_report(
    read_ago: float | None, rabbitmq: bool | None, expected: dict[str, bool]
) -> None:
    assert readiness(Clock(), read_ago=read_ago, rabbitmq=rabbitmq).report() == expected
