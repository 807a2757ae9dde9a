"""bench/replay.py on a small generated trace: every job through the real operator onto
simulated workers, figures against the trace's references, and nothing left behind."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.traces import TraceShape, generate
from tests.support.stack import ROOT, Kubectl

pytestmark = pytest.mark.stack

CONTRACT = {
    "jobs",
    "succeeded",
    "checkpoint_loads",
    "p50_wait_s",
    "p99_wait_s",
    "makespan_s",
    "apiserver_writes_per_job",
    "operator_max_rss_mib",
    "reference",
}


def test_a_small_trace_replays_through_the_operator(kubectl: Kubectl, tmp_path: Path) -> None:
    shape = TraceShape(jobs=20, models=3, workers=2, loras=1, tenants=2, seed=3)
    trace = generate(shape)
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in trace))
    out = tmp_path / "out.json"

    replay = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replay.py"), str(path),
         "--workers", "2", "--concurrency", "1", "--hot-slots", "2", "--load-seconds", "8",
         "--speedup", "40", "--json", str(out), "--limit", "120"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip

    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result.keys() >= CONTRACT
    assert result["jobs"] == result["succeeded"] == len(trace)
    # Two independent counts: the workers' metric, and their record of each job's load.
    assert result["checkpoint_loads"] == result["job_loads_recorded"]
    # The workers start empty: every model the trace names is loaded at least once.
    assert result["checkpoint_loads"] >= len({record["model"] for record in trace})
    assert 0 <= result["p50_wait_s"] <= result["p99_wait_s"]
    assert result["makespan_s"] > trace[-1]["t"]
    assert result["apiserver_writes_per_job"] > 0
    assert result["operator_max_rss_mib"] > 0
    reference = result["reference"]
    assert reference["jobs"] == len(trace)
    assert reference.keys() >= {"belady", "least_loaded", "hot_first", "planner"}
    # Its namespaces are deleted (or going) once it is done.
    listed = kubectl.json("get", "namespaces")["items"]
    left = [
        ns["metadata"]["name"]
        for ns in listed
        if ns["metadata"]["name"].startswith(result["run"])
        and ns.get("status", {}).get("phase") != "Terminating"
    ]
    assert left == []
