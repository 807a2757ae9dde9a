"""`make up` on a running stack restarts exactly the processes that died."""

import pytest

from tests.support.faults import alive, infra_pids, kill, revive
from tests.support.stack import Kubectl

pytestmark = pytest.mark.disruptive


@pytest.mark.parametrize("victim", ["rabbitmq", "postgres"])
def test_up_infra_restarts_only_the_killed_process(victim: str, kubectl: Kubectl) -> None:
    before = infra_pids()
    kill(victim)
    revive()
    after = infra_pids()
    changed = sorted(name for name in before if after[name] != before[name])
    assert changed == [victim]
    assert all(alive(pid) for pid in after.values())
    assert kubectl.run("get", "--raw", "/readyz").stdout == "ok"
