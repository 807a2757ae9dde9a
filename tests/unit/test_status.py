"""Status patches of a GenerationJob: conditions keep their transition time unless their
status changes, one condition per type, and each transition writes the documented fields.

`status.now` is replaced by a fake clock so every timestamp is known.
"""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from diffleet_core.resources.conditions import ConditionStatus, Reason
from diffleet_core.resources.generation_job import GenerationJobStatus, JobPhase, Tier
from diffleet_operator import status
from diffleet_operator.queue.held import Admission

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(T0)
    monkeypatch.setattr(status, "now", fake)
    return fake


def after(current: GenerationJobStatus, patch: dict[str, Any]) -> GenerationJobStatus:
    """The status once the merge patch is applied (None deletes a field)."""
    merged = current.model_dump(mode="json", by_alias=True, exclude_none=True)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return GenerationJobStatus.model_validate(merged)


def set_condition(
    current: GenerationJobStatus, kind: str, state: ConditionStatus, reason: str = "R"
) -> GenerationJobStatus:
    conditions = status.with_condition(current, 3, kind, state, reason, f"{kind} is {state}")
    return after(current, {"conditions": conditions})


def condition(current: GenerationJobStatus, kind: str) -> dict[str, Any]:
    dumped = current.model_dump(mode="json", by_alias=True, exclude_none=True)
    [found] = [c for c in dumped["conditions"] if c["type"] == kind]
    return dict(found)


@pytest.mark.parametrize(
    ("first", "second", "moved"),
    [
        pytest.param(TRUE, TRUE, False, id="True to True keeps the time"),
        pytest.param(FALSE, FALSE, False, id="False to False keeps the time"),
        pytest.param(FALSE, TRUE, True, id="False to True moves it"),
        pytest.param(TRUE, FALSE, True, id="True to False moves it"),
        pytest.param(TRUE, ConditionStatus.UNKNOWN, True, id="True to Unknown moves it"),
    ],
)
def test_transition_time_moves_only_when_the_status_changes(
    clock: Clock, first: ConditionStatus, second: ConditionStatus, moved: bool
) -> None:
    current = set_condition(GenerationJobStatus(), status.SCHEDULED, first, reason="First")
    clock.moment = T1
    current = set_condition(current, status.SCHEDULED, second, reason="Second")
    written = condition(current, status.SCHEDULED)
    assert written["lastTransitionTime"] == status.timestamp(T1 if moved else T0)
    assert written["status"] == second
    assert written["reason"] == "Second"
    assert written["observedGeneration"] == 3


def test_a_new_condition_gets_the_current_time(clock: Clock) -> None:
    conditions = status.with_condition(
        GenerationJobStatus(), None, status.ADMITTED, TRUE, Reason.ADMITTED, "in"
    )
    assert conditions == [
        {
            "type": status.ADMITTED,
            "status": "True",
            "reason": "Admitted",
            "message": "in",
            "lastTransitionTime": "2025-01-01T12:00:00Z",
        }
    ]


def test_one_condition_per_type_and_others_kept(clock: Clock) -> None:
    current = GenerationJobStatus()
    current = set_condition(current, status.MODEL_READY, FALSE)
    current = set_condition(current, status.ADMITTED, TRUE)
    clock.moment = T1
    current = set_condition(current, status.MODEL_READY, TRUE)
    current = set_condition(current, status.ADMITTED, TRUE)
    current = set_condition(current, status.SCHEDULED, TRUE)
    types = [c.type for c in current.conditions or []]
    assert sorted(types) == sorted({status.MODEL_READY, status.ADMITTED, status.SCHEDULED})
    assert condition(current, status.MODEL_READY)["lastTransitionTime"] == "2025-01-01T12:05:00Z"
    assert condition(current, status.ADMITTED)["lastTransitionTime"] == "2025-01-01T12:00:00Z"


def test_queued_clears_the_placement_of_an_earlier_attempt(clock: Clock) -> None:
    current = GenerationJobStatus(
        phase=JobPhase.RUNNING, pool="t4", node="node-1", worker="gpu-0", attempts=1
    )
    patch = status.queued(current, 2, tier=Tier.PRO, queue="diffleet.jobs.pro", seed=7, attempt=2)
    for field in ("pool", "node", "worker", "progress"):
        assert field in patch
        assert patch[field] is None
    assert patch["phase"] == JobPhase.QUEUED
    assert (patch["tier"], patch["queue"], patch["seed"], patch["attempts"]) == (
        Tier.PRO,
        "diffleet.jobs.pro",
        7,
        2,
    )
    assert patch["queuedAt"] == "2025-01-01T12:00:00Z"
    assert patch["reason"] == Reason.ADMITTED
    assert patch["message"] == "waiting in diffleet.jobs.pro"
    requeued = after(current, patch)
    assert (requeued.pool, requeued.node, requeued.worker) == (None, None, None)
    assert condition(requeued, status.ADMITTED)["status"] == "True"


def test_admitted_and_scheduled_is_queued_then_scheduled_in_one_patch(clock: Clock) -> None:
    admitted_at = T0 - timedelta(seconds=2)
    admission = Admission("uid-1", 1, Tier.PRO, "diffleet.jobs.pro", 7, admitted_at)
    current = GenerationJobStatus()
    patch = status.admitted_and_scheduled(
        current, 1, admission, pool="t4", node="node-1", worker="gpu-0"
    )
    combined = after(current, patch)
    assert combined.phase is JobPhase.SCHEDULED
    assert (combined.tier, combined.queue, combined.seed, combined.attempts) == (
        Tier.PRO,
        "diffleet.jobs.pro",
        7,
        1,
    )
    assert (combined.pool, combined.node, combined.worker) == ("t4", "node-1", "gpu-0")
    assert patch["queuedAt"] == "2025-01-01T11:59:58Z"
    assert patch["scheduledAt"] == "2025-01-01T12:00:00.000Z"
    assert combined.reason == Reason.DISPATCHED
    assert condition(combined, status.ADMITTED)["status"] == "True"
    assert condition(combined, status.SCHEDULED)["status"] == "True"


@pytest.mark.parametrize(
    ("phase", "reason", "message"),
    [
        (JobPhase.FAILED, Reason.TIMEOUT, "ran past timeoutSeconds (600s)"),
        (JobPhase.FAILED, Reason.OUT_OF_MEMORY, "CUDA out of memory"),
        (JobPhase.CANCELLED, Reason.CANCELLED, "cancelled by the user"),
    ],
)
def test_finished_unsuccessfully(clock: Clock, phase: JobPhase, reason: str, message: str) -> None:
    current = GenerationJobStatus(phase=JobPhase.RUNNING)
    patch = status.finished_unsuccessfully(current, 4, phase=phase, reason=reason, message=message)
    assert patch["phase"] == phase
    assert patch["reason"] == reason
    assert patch["message"] == message
    assert patch["completedAt"] == "2025-01-01T12:00:00.000Z"
    finished = after(current, patch)
    complete = condition(finished, status.COMPLETE)
    assert (complete["status"], complete["reason"], complete["message"]) == (
        "False",
        reason,
        message,
    )
    assert complete["observedGeneration"] == 4
    assert finished.phase is phase
    assert finished.completed_at == T0


def test_timestamp_is_utc_with_a_z() -> None:
    local = datetime(2025, 1, 1, 13, 30, 15, 999, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=2))
    )
    assert status.timestamp(local) == "2025-01-01T13:30:15Z"
    # A transition's instant keeps the milliseconds its lag is measured by.
    assert status.instant(local) == "2025-01-01T13:30:15.000Z"
    assert status.instant(local.replace(microsecond=123_999)) == "2025-01-01T13:30:15.123Z"


AT = datetime(2025, 1, 1, tzinfo=UTC)
# Each incoming write as its caller builds it (attempt 1 unless it says otherwise).
WRITES: dict[str, dict[str, Any]] = {
    "pending": {"phase": JobPhase.PENDING},
    "queued": {"phase": JobPhase.QUEUED, "attempts": 1},
    "requeued": {"phase": JobPhase.QUEUED, "attempts": 2},
    "scheduled": {"phase": JobPhase.SCHEDULED},
    "started": status.running(AT) | {"attempts": 1},
    "progress": status.progress(3, 10),
    "succeeded": {"phase": JobPhase.SUCCEEDED},
    "failed": {"phase": JobPhase.FAILED},
    "cancelled": {"phase": JobPhase.CANCELLED},
    "condition only": {"conditions": []},
}
# Which writes land on a job in each phase (attempt 1); all others are dropped.
LANDS: dict[JobPhase, set[str]] = {
    JobPhase.PENDING: set(WRITES),
    JobPhase.QUEUED: set(WRITES) - {"pending"},
    JobPhase.SCHEDULED: set(WRITES) - {"pending", "queued"},
    JobPhase.RUNNING: set(WRITES) - {"pending", "queued", "scheduled"},
    JobPhase.SUCCEEDED: {"condition only"},
    JobPhase.FAILED: {"condition only"},
    JobPhase.CANCELLED: {"condition only"},
}


@pytest.mark.parametrize(
    ("phase", "write"),
    [pytest.param(phase, write, id=f"{phase} <- {write}") for phase in LANDS for write in WRITES],
)
def test_phase_writes_are_monotonic(phase: JobPhase, write: str) -> None:
    current = GenerationJobStatus(phase=phase, attempts=1)
    assert status.may_write(current, WRITES[write]) is (write in LANDS[phase])


def test_a_report_about_an_older_attempt_is_dropped() -> None:
    current = GenerationJobStatus(phase=JobPhase.QUEUED, attempts=2)
    assert not status.may_write(current, status.running(AT) | {"attempts": 1})
    assert status.may_write(current, status.running(AT) | {"attempts": 2})


def test_a_job_with_no_status_yet_takes_any_write() -> None:
    assert status.may_write(GenerationJobStatus(), {"phase": JobPhase.SCHEDULED})


def test_a_patch_keeps_the_stored_conditions_it_does_not_set() -> None:
    stored = {
        "conditions": [
            {"type": "Admitted", "status": "True", "reason": "Admitted"},
            {"type": "Scheduled", "status": "True", "reason": "Dispatched"},
        ]
    }
    # Computed from a read before Admitted and Scheduled were written.
    patch = {"phase": "Succeeded", "conditions": [{"type": "Complete", "status": "True"}]}
    merged = status.over_stored_conditions(patch, stored)
    assert [c["type"] for c in merged["conditions"]] == ["Admitted", "Scheduled", "Complete"]
    assert merged["phase"] == "Succeeded"
    again = {"conditions": [{"type": "Scheduled", "status": "False", "reason": "Waiting"}]}
    assert status.over_stored_conditions(again, stored)["conditions"][1]["status"] == "False"
    # Nothing to merge: no conditions in the patch, or none readable stored.
    assert status.over_stored_conditions({"phase": "Running"}, stored) == {"phase": "Running"}
    assert status.over_stored_conditions(patch, {"conditions": "junk"}) == patch
    assert status.over_stored_conditions(patch, None) == patch
