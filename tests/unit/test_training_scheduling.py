"""Trainings below inference: which running trainings give their slot back when
inference waits (the one dispatched last first, one per missing slot, never twice), and
what waiting trainings weigh in the autoscaler's demand."""

from diffleet_operator.scheduler.eligibility import Requirements
from diffleet_operator.training.demand import weighted
from diffleet_operator.training.preemption import RunningTraining, to_preempt

A = RunningTraining("a", "w1", 1, since=10.0)
B = RunningTraining("b", "w2", 1, since=20.0)
C = RunningTraining("c", "w3", 2, since=30.0)


def test_no_preemption_while_free_slots_take_the_waiting_jobs() -> None:
    assert to_preempt([A, B], set(), jobs_waiting=2, free_slots=2) == []
    assert to_preempt([A, B], set(), jobs_waiting=0, free_slots=0) == []


def test_the_training_dispatched_last_is_preempted_first() -> None:
    assert to_preempt([A, B, C], set(), jobs_waiting=1, free_slots=0) == [C]
    assert to_preempt([A, B, C], set(), jobs_waiting=2, free_slots=0) == [C, B]
    assert to_preempt([A, B, C], set(), jobs_waiting=3, free_slots=1) == [C, B]


def test_a_preemption_in_flight_counts_and_is_not_sent_again() -> None:
    assert to_preempt([A, B, C], {"c"}, jobs_waiting=1, free_slots=0) == []
    assert to_preempt([A, B, C], {"c"}, jobs_waiting=2, free_slots=0) == [B]


def test_more_jobs_than_trainings_preempts_them_all() -> None:
    assert to_preempt([A], set(), jobs_waiting=5, free_slots=0) == [A]


SD = Requirements(model_digest="sd", vram_gib=4.0)
XL = Requirements(model_digest="xl", vram_gib=8.0)


def test_waiting_trainings_weigh_ceil_weight_times_their_number_per_needs() -> None:
    waiting = [("t1", SD), ("t2", SD), ("t3", SD), ("t4", XL)]
    counted = weighted(waiting, 0.5)
    assert [job.uid for job in counted] == ["t1", "t2", "t4"]
    assert [job.uid for job in weighted(waiting, 1.0)] == ["t1", "t2", "t3", "t4"]
    assert weighted(waiting, 0.0) == []
