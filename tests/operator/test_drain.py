"""The dispatch pause and `diffleet-admin drain`/`resume`: a paused operator dispatches
nothing new (jobs stay Queued) while the job already running finishes and is recorded;
drain exits 1 naming the busy jobs at its deadline and 0 once none is busy; resume
dispatches what waited."""

import pytest

from diffleet_api import admin
from tests.support.platform import (
    Platform,
    apply_job,
    job_status,
    register_model,
    wait_for_phase,
)
from tests.support.stack import Kubectl

CONFIGMAP = "diffleet-dispatch"


def run_admin(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """diffleet-admin's exit status and what it printed (in this process: the command's
    imports alone take seconds on a busy machine, longer than the job it waits for)."""
    args = admin.parser().parse_args(argv)
    status: int = args.run(args)
    printed = capsys.readouterr()
    return status, printed.out + printed.err


def test_drain_waits_for_running_jobs_and_resume_dispatches_queued_ones(
    kubectl: Kubectl, namespace: str, platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    platform.operator()
    platform.worker("w1", sim_step_seconds="0.5")
    register_model(kubectl, namespace, "m")
    apply_job(kubectl, namespace, "running", model="m", steps=16)
    wait_for_phase(kubectl, namespace, "running", "Running")

    where = ["--namespace", namespace, "--configmap", CONFIGMAP, "--job-namespace", namespace]
    status, printed = run_admin(capsys, "drain", *where, "--timeout", "0")
    assert status == 1, printed
    assert f"not drained within 0s: {namespace}/running" in printed

    apply_job(kubectl, namespace, "waiting", model="m")
    wait_for_phase(kubectl, namespace, "waiting", "Queued")

    status, printed = run_admin(capsys, "drain", *where, "--timeout", "60")
    assert status == 0, printed
    assert wait_for_phase(kubectl, namespace, "running", "Succeeded")["outputs"]
    assert job_status(kubectl, namespace, "waiting")["phase"] == "Queued"

    status, printed = run_admin(capsys, "resume", *where[:4])
    assert status == 0, printed
    assert wait_for_phase(kubectl, namespace, "waiting", "Succeeded")["worker"] == "w1"
