"""Fair share between tenants (job namespaces) within a tier, on the real operator.

The dispatch order is the order one simulated worker of concurrency 1 receives the jobs
in (its log's "running job <uid>" lines): exact, and independent of status writes. Every
tenant's model "m" is the same checkpoint (one digest), so placement (which groups jobs
by model) sees equal choices and the fair order alone decides; one test gives the small
tenant a model of its own, where placement would rather serve the hot one.
"""

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from diffleet_core import MAX_RUNNING_JOBS_ANNOTATION, SHARE_WEIGHT_ANNOTATION
from tests.conftest import delete_namespace
from tests.support.platform import Platform, Process, cancel, register_model, tiny_safetensors
from tests.support.polling import eventually
from tests.support.stack import Kubectl

RECEIVED = re.compile(r"running job (\S+) attempt")

Tenants = Callable[..., list[str]]


@pytest.fixture
def tenants(kubectl: Kubectl, namespace: str, platform: Platform) -> Iterator[Tenants]:
    """tenants({"annotation": "value"}, ...): one job namespace per argument, with those
    annotations and model "m", served by one operator (started here)."""
    created: list[str] = []

    def make(*annotations: dict[str, str]) -> list[str]:
        for index, wanted in enumerate(annotations):
            name = f"{namespace}-t{index}"
            kubectl.run("create", "namespace", name)
            created.append(name)
            pairs = [f"{key}={value}" for key, value in wanted.items()]
            if pairs:
                kubectl.run("annotate", "namespace", name, *pairs)
        platform.job_namespaces = created
        platform.operator()
        register_shared_model(kubectl, created)
        return created

    yield make
    for name in created:
        delete_namespace(kubectl, name)


def register_shared_model(kubectl: Kubectl, namespaces: list[str]) -> str:
    """ModelCache "m" in each namespace, all of one checkpoint uploaded once; its digest."""
    key = f"tests/{namespaces[0]}/m-shared.safetensors"
    boto3.client("s3").put_object(Bucket="diffleet-models", Key=key, Body=tiny_safetensors(key))
    source = f"s3://diffleet-models/{key}"
    digests = {register_model(kubectl, namespace, "m", source=source) for namespace in namespaces}
    return digests.pop()


def submit(kubectl: Kubectl, namespace: str, count: int, prefix: str, **spec: Any) -> None:
    """`count` jobs of model "m" named prefix-0..., created in one kubectl call."""
    items = [
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GenerationJob",
            "metadata": {"name": f"{prefix}-{n}"},
            "spec": {"prompt": "a red circle", "model": "m", "steps": 1} | spec,
        }
        for n in range(count)
    ]
    kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), namespace)


def quick_worker(
    platform: Platform, concurrency: int = 1, step_seconds: float = 0.05, hot_models: str = "[]"
) -> Process:
    """Worker w1 without load times: with the default step time, the dispatch loop sets
    the pace of one-step jobs."""
    return platform.worker(
        "w1",
        concurrency=str(concurrency),
        sim_step_seconds=str(step_seconds),
        sim_load_seconds="0",
        sim_warm_load_seconds="0",
        sim_hot_models=hot_models,
    )


def received(worker: Process) -> list[str]:
    """The uids of the jobs the worker received, in order."""
    return RECEIVED.findall(worker.log.read_text(errors="replace"))


def names(kubectl: Kubectl, namespaces: list[str]) -> dict[str, str]:
    """uid -> job name, over the namespaces."""
    return {
        job["metadata"]["uid"]: job["metadata"]["name"]
        for namespace in namespaces
        for job in kubectl.json("get", "generationjobs", "-n", namespace)["items"]
    }


def phases(kubectl: Kubectl, namespace: str) -> Counter[str]:
    jobs = kubectl.json("get", "generationjobs", "-n", namespace)["items"]
    return Counter((job.get("status") or {}).get("phase", "Pending") for job in jobs)


def dispatch_order(kubectl: Kubectl, worker: Process, namespaces: list[str]) -> list[str]:
    named = names(kubectl, namespaces)
    return [named[uid] for uid in received(worker)]


def queued(kubectl: Kubectl, *counts: tuple[str, int]) -> None:
    """Until each (namespace, count) has that many jobs Queued (no worker yet: at once)."""
    for namespace, count in counts:

        def all_queued(namespace: str = namespace, count: int = count) -> bool:
            return phases(kubectl, namespace)["Queued"] == count

        eventually(all_queued, timeout=60, what=f"{count} Queued in {namespace}")


def test_a_small_tenant_starts_within_the_next_dispatches_behind_a_backlog(
    kubectl: Kubectl, platform: Platform, tenants: Tenants
) -> None:
    """Both wait before the worker starts, the big tenant's 12 jobs admitted first: in one
    queue per tier (FIFO) the small tenant's 4 would be dispatches 13 to 16."""
    big, small = tenants({}, {})
    submit(kubectl, big, 12, "big")
    queued(kubectl, (big, 12))
    submit(kubectl, small, 4, "small")
    queued(kubectl, (small, 4))
    worker = quick_worker(platform)
    eventually(lambda: phases(kubectl, small)["Succeeded"] == 4, timeout=60, what="small done")

    order = dispatch_order(kubectl, worker, [big, small])
    positions = [order.index(f"small-{n}") + 1 for n in range(4)]
    print(f"small tenant's 4 jobs behind the big one's 12: dispatches {positions}")
    # Ties go in arrival order: the big tenant's first job, then every other one (which
    # of the small tenant's jobs is which follows their admission, not their names).
    assert sorted(positions) == [2, 4, 6, 8]


def test_placement_does_not_starve_a_small_tenant_of_another_model(
    kubectl: Kubectl, namespace: str, platform: Platform, tenants: Tenants
) -> None:
    """The worker holds the big tenant's model hot; the small tenant's model "n" needs a
    load. Placement prefers hot jobs, but a namespace LAG_BOUND (4) dispatches behind has
    its next job served in order, so the small tenant's k-th job leaves by dispatch
    2k + 5 at the latest: without the bound its jobs would wait for the big tenant's
    whole backlog (dispatches 13 to 16)."""
    big, small = tenants({}, {})
    register_model(kubectl, small, "n")
    held = register_shared_model(kubectl, [big, small])
    submit(kubectl, big, 12, "big")
    queued(kubectl, (big, 12))
    submit(kubectl, small, 4, "small", model="n")
    queued(kubectl, (small, 4))
    worker = quick_worker(platform, hot_models=json.dumps([held]))
    eventually(lambda: phases(kubectl, small)["Succeeded"] == 4, timeout=60, what="small done")

    order = dispatch_order(kubectl, worker, [big, small])
    positions = sorted(order.index(f"small-{n}") + 1 for n in range(4))
    print(f"small tenant of another model behind 12 hot jobs: dispatches {positions}")
    assert all(position <= 2 * k + 5 for k, position in enumerate(positions)), positions


def test_weights_three_to_one_share_dispatches_three_to_one(
    kubectl: Kubectl, platform: Platform, tenants: Tenants
) -> None:
    heavy, light = tenants({SHARE_WEIGHT_ANNOTATION: "3"}, {})
    submit(kubectl, heavy, 12, "heavy")
    submit(kubectl, light, 6, "light")
    queued(kubectl, (heavy, 12), (light, 6))
    worker = quick_worker(platform)
    eventually(lambda: len(received(worker)) >= 12, timeout=60, what="12 dispatched")

    first = dispatch_order(kubectl, worker, [heavy, light])[:12]
    counts = Counter(name.split("-")[0] for name in first)
    print(f"weights 3:1, both backlogged: first 12 dispatches {dict(counts)}: {first}")
    assert counts == {"heavy": 9, "light": 3}


def test_max_running_jobs_holds_and_unplaceable_jobs_block_no_one(
    kubectl: Kubectl, platform: Platform, tenants: Tenants
) -> None:
    """`capped` may run 2 jobs at once. Each tenant's first job needs a GPU class no
    worker has: it waits, and neither its own later jobs nor the other tenant's wait
    behind it. The capped tenant's jobs run 75 s, so none ends on its own here."""
    capped, other = tenants({MAX_RUNNING_JOBS_ANNOTATION: "2"}, {})
    for tenant in (capped, other):
        submit(kubectl, tenant, 1, "unplaceable", gpuClass="h100")
    submit(kubectl, capped, 4, "long", steps=150)
    submit(kubectl, other, 3, "short")
    worker = quick_worker(platform, concurrency=8, step_seconds=0.5)

    eventually(lambda: phases(kubectl, other)["Succeeded"] == 3, timeout=60, what="others ran")
    eventually(lambda: phases(kubectl, capped)["Running"] == 2, timeout=30, what="2 running")
    got = dispatch_order(kubectl, worker, [capped, other])
    # 8 slots, 3 taken by the other tenant at most: only the limit keeps `capped` at 2
    # (which two follows their admission order, not their names).
    assert sum(name.startswith("long") for name in got) == 2
    assert not any(name.startswith("unplaceable") for name in got)
    assert phases(kubectl, capped)["Queued"] == 3  # its unplaceable job and 2 long ones

    cancel(kubectl, capped, next(name for name in got if name.startswith("long")))

    def long_ones() -> int | None:
        got = dispatch_order(kubectl, worker, [capped, other])
        count = sum(name.startswith("long") for name in got)
        return count if count > 2 else None

    # Running at once, not in all: one ended, so one more starts.
    assert eventually(long_ones, timeout=30, what="a third long job once one ended") == 3
