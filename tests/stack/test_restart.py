"""`make down` leaves nothing behind, and `make up` after it works again."""

import socket

import pytest

from tests.support.stack import Kubectl, stack, stack_config

pytestmark = pytest.mark.disruptive


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stack_ports() -> dict[str, int]:
    return {key: int(value) for key, value in stack_config().items() if key.endswith("_PORT")}


def test_down_stops_every_process_and_up_starts_again(kubectl: Kubectl) -> None:
    assert stack("down", timeout=120).returncode == 0
    status = stack("status", timeout=30)
    assert status.returncode != 0
    assert "running" not in status.stdout
    still_open = [name for name, port in stack_ports().items() if listening(port)]
    assert still_open == []

    up = stack("up-infra")
    assert up.returncode == 0, up.stderr[-4000:]
    assert kubectl.run("get", "--raw", "/readyz").stdout == "ok"
