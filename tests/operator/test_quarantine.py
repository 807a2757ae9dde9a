"""One poisoned record never stops a loop of the real operator: a malformed message, a
job with a malformed status, and a job whose status write the API server refuses are
each quarantined (condition, Warning Event, diffleet_operator_records_quarantined_total)
while the next record is still handled."""

from typing import Any

import pytest

from tests.operator.injection import (
    REFUSE_LABEL,
    apply_labelled_job,
    publish,
    ready_messages,
    refused_status_writes,
)
from tests.support.platform import (
    Platform,
    Process,
    apply_job,
    job_status,
    register_model,
    wait_for_phase,
)
from tests.support.polling import eventually
from tests.support.stack import Kubectl

QUARANTINED = "diffleet_operator_records_quarantined_total"


def quarantine_condition(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    conditions = job_status(kubectl, namespace, name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Quarantined"), None)


def warning_reasons(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    return [
        event["reason"]
        for event in kubectl.json("get", "events", "-n", namespace)["items"]
        if event["involvedObject"]["name"] == name and event["type"] == "Warning"
    ]


def assert_quarantined(
    kubectl: Kubectl, namespace: str, name: str, operator: Process, loop: str, message: str
) -> dict[str, Any]:
    """The job carries the condition and a Warning Event; the loop counted it once."""
    condition = eventually(
        lambda: quarantine_condition(kubectl, namespace, name),
        timeout=60,
        what=f"{name} quarantined",
    )
    assert condition["status"] == "True"
    assert condition["message"].startswith(f"{loop} loop: {message}"), condition["message"]
    eventually(
        lambda: "Quarantined" in warning_reasons(kubectl, namespace, name),
        timeout=20,
        what=f"a Quarantined Warning Event on {name}",
    )
    assert operator.metric(QUARANTINED, loop=loop) == 1
    return condition


def test_malformed_messages_are_dropped_and_the_loops_go_on(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = platform.operator()
    register_model(kubectl, namespace, "m")
    platform.worker("w1")
    platform.wait_for_workers(operator, "t4", 1)
    # The tenant queue is consumed once a job of the namespace is admitted; the per-tier
    # queue of releases before tenant queues is drained all along.
    apply_job(kubectl, namespace, "before", model="m")
    wait_for_phase(kubectl, namespace, "before", "Succeeded")
    tenant_queue, tier_queue = f"{namespace}.jobs.free.{namespace}", f"{namespace}.jobs.free"
    results_queue = f"{namespace}.results"
    publish(tenant_queue, b"not json")
    publish(tier_queue, b'{"job": {"uid": 1}, "tier": "platinum"}')
    publish(results_queue, b"\x00\xff\xfe")
    publish(results_queue, b'{"event": "exploded", "job": {}}')

    apply_job(kubectl, namespace, "after", model="m")
    wait_for_phase(kubectl, namespace, "after", "Succeeded")
    eventually(
        lambda: (
            operator.metric(QUARANTINED, loop="dispatch") == 2
            and operator.metric(QUARANTINED, loop="results") == 2
        ),
        timeout=20,
        what="4 malformed messages counted",
    )
    # Dropped, not redelivered.
    assert ready_messages(tenant_queue) == 0
    assert ready_messages(tier_queue) == 0
    assert ready_messages(results_queue) == 0
    assert "a malformed message from" in operator.log.read_text()


def test_a_job_with_a_malformed_status_is_quarantined_and_the_sweep_goes_on(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """A completion time the CRD accepts but no date arithmetic can handle (the TTL
    check overflows) on the job that the sweep meets first; the next job still times
    out."""
    apply_job(kubectl, namespace, "a-poisoned", model="absent")
    kubectl.run(
        "patch", "generationjob", "a-poisoned", "-n", namespace, "--subresource=status",
        "--type=merge", "-p",
        '{"status": {"phase": "Succeeded", "completedAt": "9999-12-31T23:59:59Z"}}',
    )  # fmt: skip
    apply_job(kubectl, namespace, "b-overdue", model="absent", timeoutSeconds=1)
    operator = platform.operator()

    overdue = wait_for_phase(kubectl, namespace, "b-overdue", "Failed", timeout=60)
    assert overdue["reason"] == "Timeout"
    condition = assert_quarantined(
        kubectl, namespace, "a-poisoned", operator, "housekeeping", "OverflowError"
    )
    assert condition["reason"] == "HandlerFailed"
    assert job_status(kubectl, namespace, "a-poisoned")["phase"] == "Succeeded"
    assert operator.popen.poll() is None


# Per loop: the phase whose write the API server refuses for the poisoned job, the job
# spec both jobs share, whether a worker runs, and the phase the healthy job reaches.
REFUSALS = [
    pytest.param("admission", "Pending", {"model": "absent"}, False, "Pending", id="admission"),
    pytest.param("dispatch", "Scheduled", {"model": "m"}, True, "Succeeded", id="dispatch"),
    pytest.param("results", "Running", {"model": "m"}, True, "Succeeded", id="results"),
    pytest.param(
        "housekeeping",
        "Failed",
        {"model": "absent", "timeoutSeconds": 1},
        False,
        "Failed",
        id="housekeeping",
    ),
]


@pytest.mark.parametrize(("loop", "refused", "spec", "worker", "reached"), REFUSALS)
def test_a_refused_status_write_quarantines_the_job_and_the_loop_goes_on(
    kubectl: Kubectl,
    namespace: str,
    platform: Platform,
    loop: str,
    refused: str,
    spec: dict[str, Any],
    worker: bool,
    reached: str,
) -> None:
    """A generic fault: the API server refuses (422) one job's write of one phase. The
    poisoned job sorts first, so the operator meets it before the healthy one."""
    apply_labelled_job(kubectl, namespace, "a-poisoned", {REFUSE_LABEL: refused}, **spec)
    with refused_status_writes(kubectl, namespace, probe_job="a-poisoned"):
        apply_job(kubectl, namespace, "b-healthy", **spec)
        operator = platform.operator()
        register_model(kubectl, namespace, "m")
        if worker:
            platform.worker("w1", concurrency="2")
        healthy = wait_for_phase(kubectl, namespace, "b-healthy", reached, timeout=60)
        condition = assert_quarantined(
            kubectl, namespace, "a-poisoned", operator, loop, "the API server answered 422"
        )
        # While the refusal holds: once it is lifted, the loop's next try may write it.
        assert job_status(kubectl, namespace, "a-poisoned").get("phase") != refused
    assert condition["reason"] == "WriteRefused"
    if reached == "Pending":
        assert healthy["reason"] == "ModelNotFound"
    assert operator.popen.poll() is None
