"""The dispatch pause's rules (diffleet_core.dispatch_pause, the operator's DispatchPause)
and diffleet-admin drain's wait (diffleet_api.drain), against a scripted job list."""

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_api.drain import remove_pools, wait_until_idle
from diffleet_api.kube import Kube
from diffleet_core.dispatch_pause import is_paused, pause_data
from diffleet_operator.dispatch_pause import DispatchPause, DispatchPauseWatch
from diffleet_operator.kube import Kube as OperatorKube


def test_only_the_exact_value_true_pauses() -> None:
    assert is_paused(pause_data(True))
    assert not is_paused(pause_data(False))
    for data in (None, {}, {"paused": "True"}, {"paused": "yes"}, {"paused": ""}):
        assert not is_paused(data)


def test_dispatch_counts_as_paused_until_the_configmap_is_read() -> None:
    pause = DispatchPause()
    seen = [pause.paused]
    for paused in (False, False, True):  # the first read, the same again, a pause
        changed = pause.set(paused)
        seen += [changed, pause.paused]
    assert seen == [True, True, False, False, False, True, True]


def job(name: str, phase: str | None) -> dict[str, Any]:
    return {"metadata": {"namespace": "team", "name": name}, "status": {"phase": phase}}


class ScriptedJobs:
    """A Kube whose job listings follow a script: a list of jobs, or an error to raise."""

    def __init__(self, script: list[list[dict[str, Any]] | Exception]) -> None:
        self.script: Iterator[list[dict[str, Any]] | Exception] = iter(script)
        self.listed: list[str | None] = []

    async def list_all_jobs(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        self.listed.append(namespace)
        step = next(self.script)
        if isinstance(step, Exception):
            raise step
        return step, "1"


def wait(jobs: ScriptedJobs, within: float, namespaces: list[str] | None = None) -> list[str]:
    return asyncio.run(wait_until_idle(cast(Kube, jobs), namespaces or [], within, poll=0.01))


def test_drain_waits_until_no_job_is_scheduled_or_running() -> None:
    busy = [job("a", "Running"), job("b", "Scheduled"), job("c", "Queued")]
    jobs = ScriptedJobs([busy, [job("a", "Running")], [job("a", "Succeeded"), job("c", "Queued")]])
    assert wait(jobs, within=30) == []
    assert jobs.listed == [None, None, None]  # all namespaces


def test_drain_names_the_busy_jobs_at_its_deadline() -> None:
    jobs = ScriptedJobs([[job("b", "Scheduled"), job("a", "Running"), job("c", "Pending")]])
    assert wait(jobs, within=0, namespaces=["team"]) == ["team/a", "team/b"]
    assert jobs.listed == ["team"]


def test_a_failed_listing_is_tried_again_and_the_last_one_failing_raises() -> None:
    flaky = ScriptedJobs([ApiException(status=503), [job("a", "Succeeded")]])
    assert wait(flaky, within=30) == []
    down = ScriptedJobs([ApiException(status=503)])
    with pytest.raises(ApiException):
        wait(down, within=0)


class UnreadableConfigMap:
    """A Kube whose ConfigMap list is forbidden (an install without the RBAC rule)."""

    async def list_config_map(self, namespace: str, name: str) -> tuple[list[Any], str]:
        raise ApiException(status=403, reason="Forbidden")


def test_a_configmap_the_operator_may_not_read_pauses_nothing() -> None:
    pause = DispatchPause()

    async def watch_until_woken() -> None:
        woken = asyncio.Event()
        kube = cast(OperatorKube, UnreadableConfigMap())
        task = asyncio.create_task(DispatchPauseWatch(kube, "ns", "cm", pause, woken.set).run())
        try:
            await asyncio.wait_for(woken.wait(), timeout=5)
        finally:
            task.cancel()

    asyncio.run(watch_until_woken())
    assert not pause.paused


class ScriptedPools:
    """A Kube whose GPUPool listings follow a script; records the deletions."""

    def __init__(self, script: list[list[str]]) -> None:
        self.script = iter(script)
        self.deleted: list[str] = []

    async def list_pools(self, selector: str) -> list[str]:
        assert selector == "app.kubernetes.io/instance=diffleet"
        return next(self.script)

    async def delete_pool(self, name: str) -> None:
        self.deleted.append(name)


def remove(pools: ScriptedPools, within: float) -> list[str]:
    selector = "app.kubernetes.io/instance=diffleet"
    return asyncio.run(remove_pools(cast(Kube, pools), selector, within, poll=0.01))


def test_removing_pools_deletes_each_and_waits_until_their_finalizers_let_them_go() -> None:
    pools = ScriptedPools([["t4", "a100"], ["t4", "a100"], ["a100"], []])
    assert remove(pools, within=30) == []
    assert pools.deleted == ["t4", "a100"]


def test_removing_pools_names_those_left_at_the_deadline() -> None:
    pools = ScriptedPools([["t4"], ["t4"]])
    assert remove(pools, within=0) == ["t4"]
