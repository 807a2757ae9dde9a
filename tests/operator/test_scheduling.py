"""Priority with anti-starvation, and model-affinity placement."""

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import delete_namespace
from tests.support.platform import Platform, apply_job, cancel, register_model, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import Kubectl


@pytest.fixture
def tiered(kubectl: Kubectl, namespace: str, platform: Platform) -> Iterator[tuple[str, str]]:
    """Two job namespaces, free and enterprise, each with model "m", served by one operator."""
    names = []
    for tier in ("free", "enterprise"):
        name = f"{namespace}-{tier}"
        kubectl.run("create", "namespace", name)
        kubectl.run("label", "namespace", name, f"diffleet.io/tier={tier}")
        names.append(name)
    platform.job_namespaces = names
    platform.operator()
    for name in names:
        register_model(kubectl, name, "m")
    yield names[0], names[1]
    for name in names:
        delete_namespace(kubectl, name)


def scheduled_order(
    kubectl: Kubectl, namespaces: list[str], count: int, excluding: frozenset[str] = frozenset()
) -> list[str]:
    """Polls the namespaces' jobs and returns their names in the order they left the queue."""
    order: list[str] = []

    def all_left() -> bool:
        for namespace in namespaces:
            for job in kubectl.json("get", "generationjobs", "-n", namespace)["items"]:
                name = job["metadata"]["name"]
                phase = (job.get("status") or {}).get("phase")
                left = phase in ("Scheduled", "Running", "Succeeded")
                if left and name not in order and name not in excluding:
                    order.append(name)
        return len(order) >= count

    eventually(all_left, timeout=120, interval=0.05, what=f"{count} jobs dispatched")
    return order


def test_enterprise_jobs_are_dispatched_before_free_ones(
    kubectl: Kubectl, namespace: str, platform: Platform, tiered: tuple[str, str]
) -> None:
    """The blocker holds the only worker until every other job is Queued (a blocker that
    ends on its own may end before a loaded machine has queued them all)."""
    free, enterprise = tiered
    platform.worker("w1", sim_step_seconds="0.3")
    apply_job(kubectl, free, "blocker", model="m", steps=150)
    wait_for_phase(kubectl, free, "blocker", "Running")
    jobs = []
    for i in range(3):
        apply_job(kubectl, free, f"free-{i}", model="m", steps=1)
        jobs.append((free, f"free-{i}"))
    for i in range(3):
        apply_job(kubectl, enterprise, f"ent-{i}", model="m", steps=1)
        jobs.append((enterprise, f"ent-{i}"))
    for ns, name in jobs:
        wait_for_phase(kubectl, ns, name, "Queued")
    cancel(kubectl, free, "blocker")

    order = scheduled_order(kubectl, [free, enterprise], count=6, excluding=frozenset({"blocker"}))
    assert [name[:3] for name in order] == ["ent"] * 3 + ["fre"] * 3


def test_free_jobs_progress_under_sustained_enterprise_load(
    kubectl: Kubectl, namespace: str, platform: Platform, tiered: tuple[str, str]
) -> None:
    free, enterprise = tiered
    for i in range(30):
        apply_job(kubectl, enterprise, f"ent-{i}", model="m", steps=1)
    for i in range(2):
        apply_job(kubectl, free, f"free-{i}", model="m", steps=1)
    for ns, name in [(enterprise, "ent-29"), (free, "free-1")]:
        wait_for_phase(kubectl, ns, name, "Queued")
    platform.worker("w1", sim_step_seconds="0.2", sim_load_seconds="0")

    # The first 21 to leave decide it: the rest of the enterprise backlog adds nothing.
    order = scheduled_order(kubectl, [free, enterprise], count=21)
    # Tier shares 8:1: a free job leaves the queue after every 8 enterprise jobs.
    assert "free-0" in order[:11], order
    assert "free-1" in order[:21], order


def test_job_goes_where_its_model_is_hot_then_warm(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """An idle cold worker, "a-cold", wins every tie-break (least loaded, then by id), so
    only the hot and the warm preferences can send the jobs elsewhere."""
    operator = platform.operator()
    x = register_model(kubectl, namespace, "model-x")
    y = register_model(kubectl, namespace, "model-y")
    platform.worker("a-cold")
    platform.worker("b-holds-x", sim_hot_models=f'["{x}"]')
    platform.worker("c-has-y", sim_warm_models=f'["{y}"]')
    platform.wait_for_workers(operator, "t4", 3)

    def presence() -> dict[str, Any] | None:
        statuses = {
            item["metadata"]["name"]: item["status"]
            for item in kubectl.json("get", "modelcaches", "-n", namespace)["items"]
        }
        held = {name: status.get("hotWorkers") for name, status in statuses.items()}
        return statuses if held == {"model-x": ["b-holds-x"], "model-y": []} else None

    statuses = eventually(presence, timeout=30, what="ModelCache status shows the fleet")
    assert statuses["model-x"]["hotReplicas"] == 1
    assert statuses["model-y"]["warmWorkers"] == ["c-has-y"]
    assert (statuses["model-y"]["hotReplicas"], statuses["model-y"]["warmReplicas"]) == (0, 1)
    apply_job(kubectl, namespace, "wants-x", model="model-x")
    assert wait_for_phase(kubectl, namespace, "wants-x", "Succeeded")["worker"] == "b-holds-x"
    apply_job(kubectl, namespace, "wants-y", model="model-y")
    assert wait_for_phase(kubectl, namespace, "wants-y", "Succeeded")["worker"] == "c-has-y"
    assert operator.metric("diffleet_placements_total", outcome="hot") == 1
    assert operator.metric("diffleet_placements_total", outcome="warm") == 1


def test_a_model_is_prewarmed_on_its_replicas_before_any_job(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = platform.operator()
    for name in ("w1", "w2", "w3"):
        platform.worker(name)
    platform.wait_for_workers(operator, "t4", 3)
    register_model(kubectl, namespace, "prewarmed", warm={"replicas": 2})

    def hot_on(count: int) -> list[str] | None:
        status = kubectl.json("get", "modelcache", "prewarmed", "-n", namespace)["status"]
        return status["hotWorkers"] if status.get("hotReplicas") == count else None

    def prewarming_events() -> list[str]:
        return [
            event["message"]
            for event in kubectl.json("get", "events", "-n", namespace)["items"]
            if event["reason"] == "Prewarming" and event["involvedObject"]["name"] == "prewarmed"
        ]

    first = eventually(lambda: hot_on(2), timeout=30, what="hot on 2 workers")
    events = eventually(prewarming_events, timeout=10, what="a Prewarming Event")
    assert all(message.startswith("loading into GPU memory on w") for message in events)

    apply_job(kubectl, namespace, "runs-hot", model="prewarmed")
    assert wait_for_phase(kubectl, namespace, "runs-hot", "Succeeded")["worker"] in first
    assert operator.metric("diffleet_placements_total", outcome="hot") == 1

    kubectl.run(
        "patch", "modelcache", "prewarmed", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"warm": {"replicas": 3}}}',
    )  # fmt: skip
    assert sorted(eventually(lambda: hot_on(3), timeout=30, what="hot on 3")) == ["w1", "w2", "w3"]
