"""Writes per job and status lag, on the real operator and API server: a job's status
writes and Events from its create to its final phase, counted from a watch, and how long
after a transition happened the watch saw it.

A job's writes are the distinct resourceVersions the watch shows after its create, up to
and including its final phase, plus the Events on the job. Its routine transitions are
tallied into one Event per reason and window on the namespace (diffleet_operator.events):
counted apart, as they grow with the windows, not the jobs.

Lag: each transition's time is in the status to the millisecond (scheduledAt from the
operator's dispatch, startedAt and completedAt from the worker's reports), and the watch
stamps each version as it arrives; all on this machine's clock. A transition written
together with a later one (a short job's Scheduled, Running and Succeeded in one write)
lags until that write.
"""

import json
import math
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from diffleet_core.telemetry import TRACEPARENT_ANNOTATION
from tests.support.platform import Platform, register_model
from tests.support.polling import eventually
from tests.support.stack import Kubectl

FINAL = {"Succeeded", "Failed", "Cancelled"}
STEP_SECONDS = 0.05
# Name prefix, jobs, steps: short jobs run 0.1 s of steps (and their upload), long 3 s.
# Over 100 transitions, so that the p99 of their lags is not their maximum.
BATCHES = [("short", 30, 2), ("long", 8, 60)]
JOBS = sum(count for _, count, _ in BATCHES)
TALLY_SECONDS = 2
# Longer than the default 0.5 s: a short job's dispatch, steps, upload and report fit in it
# even on a machine busy with the rest of the suite, so that its one write is a count of
# the writer's coalescing, not of the machine's load. Lags are bounded by it plus a write.
STATUS_WINDOW_SECONDS = 1.5
TRANSITIONS = {"scheduledAt": "Scheduled", "startedAt": "Running", "completedAt": "Succeeded"}


@dataclass
class Seen:
    """One job's versions on the watch: (resourceVersion, arrival, status)."""

    versions: list[tuple[str, datetime, dict[str, Any]]] = field(default_factory=list)

    def final(self) -> bool:
        return any(status.get("phase") in FINAL for _, _, status in self.versions)

    def writes(self) -> int:
        """Versions after the create, up to the first final one."""
        count = 0
        for _, _, status in self.versions[1:]:
            count += 1
            if status.get("phase") in FINAL:
                break
        return count

    def lags(self) -> list[float]:
        """For each transition, from its time in the status to the first version that
        showed it."""
        lags = []
        for key in TRANSITIONS:
            for _, arrival, status in self.versions:
                if at := status.get(key):
                    lags.append((arrival - datetime.fromisoformat(at)).total_seconds())
                    break
        return lags


@contextmanager
def watched_jobs(kubectl: Kubectl, namespace: str) -> Iterator[dict[str, Seen]]:
    """Every version of the namespace's GenerationJobs from now on, by name, stamped on
    arrival (a raw watch from a list's resourceVersion: nothing created after it is missed)."""
    listed = kubectl.json("get", "generationjobs", "-n", namespace)
    path = (
        f"/apis/diffleet.io/v1alpha1/namespaces/{namespace}/generationjobs"
        f"?watch=1&resourceVersion={listed['metadata']['resourceVersion']}&timeoutSeconds=300"
    )
    watch = subprocess.Popen(
        ["kubectl", "--kubeconfig", kubectl.kubeconfig, "get", "--raw", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    seen: dict[str, Seen] = {}

    def read() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            arrival = datetime.now(UTC)
            job = json.loads(line)["object"]
            versions = seen.setdefault(job["metadata"]["name"], Seen()).versions
            version = job["metadata"]["resourceVersion"]
            if not versions or versions[-1][0] != version:
                versions.append((version, arrival, job.get("status") or {}))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield seen
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=10)


def create_jobs(kubectl: Kubectl, namespace: str, prefix: str, count: int, steps: int) -> None:
    """The jobs in one apply, created back to back, each with its trace as the API creates
    it (a job created without one gets it written by its admission, where tracing is on)."""
    items = [
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GenerationJob",
            "metadata": {
                "name": f"{prefix}-{i}",
                "annotations": {TRACEPARENT_ANNOTATION: f"00-{uuid.uuid4().hex}-{i + 1:016x}-01"},
            },
            "spec": {"prompt": "a red circle", "model": "m", "steps": steps},
        }
        for i in range(count)
    ]
    kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), namespace)


def all_final(seen: dict[str, Seen], names: list[str]) -> bool:
    return all(name in seen and seen[name].final() for name in names)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def test_writes_per_job_and_status_lag(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = platform.operator(
        event_tally_seconds=str(TALLY_SECONDS), status_window_seconds=str(STATUS_WINDOW_SECONDS)
    )
    digest = register_model(kubectl, namespace, "m")
    for worker_id in ("w1", "w2"):
        platform.worker(
            worker_id,
            concurrency="10",
            sim_step_seconds=str(STEP_SECONDS),
            sim_hot_models=json.dumps([digest]),
        )
    platform.wait_for_workers(operator, "t4", 2, timeout=60)

    started = datetime.now(UTC)
    with watched_jobs(kubectl, namespace) as seen:
        for prefix, count, steps in BATCHES:
            create_jobs(kubectl, namespace, prefix, count, steps)
            names = [f"{prefix}-{i}" for i in range(count)]
            eventually(
                partial(all_final, seen, names),
                timeout=60,
                interval=0.2,
                what=f"{prefix} jobs finished",
            )
    assert {job.versions[-1][2]["phase"] for job in seen.values()} == {"Succeeded"}

    events = kubectl.json("get", "events", "-n", namespace)["items"]
    on_jobs = Counter(
        event["involvedObject"]["name"]
        for event in events
        if event["involvedObject"]["kind"] == "GenerationJob"
    )

    def writes(prefix: str) -> float:
        named = [name for name in seen if name.startswith(f"{prefix}-")]
        return sum(seen[name].writes() + on_jobs[name] for name in named) / len(named)

    lags = [lag for job in seen.values() for lag in job.lags()]
    assert len(lags) == len(TRANSITIONS) * JOBS

    # Every routine transition is in a tallied Event on the namespace.
    def tallied() -> list[dict[str, Any]] | None:
        items = kubectl.json("get", "events", "-n", namespace)["items"]
        tallies = [e for e in items if e["involvedObject"]["kind"] == "Namespace"]
        counts = Counter({e["reason"]: 0 for e in tallies})
        for tally in tallies:
            counts[tally["reason"]] += tally["count"]
        return (
            tallies if counts == {"Dispatched": JOBS, "Started": JOBS, "Succeeded": JOBS} else None
        )

    tallies = eventually(tallied, timeout=30, what="routine transitions tallied")
    windows = (datetime.now(UTC) - started).total_seconds() / TALLY_SECONDS + 1
    print(
        f"\nwrites per job: short {writes('short'):.2f}, long {writes('long'):.2f}; "
        f"tallied Events {len(tallies)} for {JOBS} jobs; "
        f"status lag p50 {percentile(lags, 0.5):.3f}s p99 {percentile(lags, 0.99):.3f}s "
        f"max {max(lags):.3f}s"
    )
    assert writes("short") <= 1.5
    assert writes("long") <= 2
    assert len(tallies) <= 3 * math.ceil(windows)  # per window, not per job
    assert percentile(lags, 0.99) <= STATUS_WINDOW_SECONDS + 1.0
