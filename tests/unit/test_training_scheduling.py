"""Trainings below inference: which running trainings give their slot back when
inference waits (on a worker the waiting job may run on, the one dispatched last first,
one per missing slot, never twice), where no training is placed, and what waiting
trainings weigh in the autoscaler's demand."""

from diffleet_operator.cache.fleet import WorkerView
from diffleet_operator.scheduler.eligibility import Requirements
from diffleet_operator.training.demand import weighted
from diffleet_operator.training.preemption import (
    RunningTraining,
    to_preempt,
    wanted_by_inference,
)
from tests.unit.test_placement import NO_POOLS, needs, worker

A = RunningTraining("a", "w1", 1, since=10.0)
B = RunningTraining("b", "w2", 1, since=20.0)
C = RunningTraining("c", "w3", 2, since=30.0)
JOB = needs()
H100_JOB = needs(gpu_class="h100")
# Each training holds its worker's only slot.
BUSY = [worker("w1", jobs=["a"]), worker("w2", jobs=["b"]), worker("w3", jobs=["c"])]


def preempted(
    waiting: list[Requirements],
    fleet: list[WorkerView] = BUSY,
    preempting: frozenset[str] = frozenset(),
) -> list[str]:
    chosen = to_preempt([A, B, C], preempting, waiting, fleet, NO_POOLS)
    return [training.uid for training in chosen]


def test_no_preemption_while_free_slots_take_the_waiting_jobs() -> None:
    free = [*BUSY, worker("w4"), worker("w5")]
    assert preempted([JOB, JOB], free) == []
    assert preempted([]) == []


def test_the_training_dispatched_last_is_preempted_first() -> None:
    assert preempted([JOB]) == ["c"]
    assert preempted([JOB, JOB]) == ["c", "b"]
    assert preempted([JOB, JOB, JOB], [*BUSY, worker("w4")]) == ["c", "b"]


def test_a_preemption_in_flight_counts_and_is_not_sent_again() -> None:
    assert preempted([JOB], preempting=frozenset({"c"})) == []
    assert preempted([JOB, JOB], preempting=frozenset({"c"})) == ["b"]


def test_more_jobs_than_trainings_preempts_them_all() -> None:
    assert preempted([JOB] * 5) == ["c", "b", "a"]


def test_only_a_training_on_a_worker_the_job_may_run_on_is_preempted() -> None:
    """A job for H100s preempts the training on the H100 worker, not the one dispatched
    last; a job no training's worker may run on preempts nothing."""
    fleet = [*BUSY[:2], worker("w3", pool="h100", jobs=["c"])]
    assert preempted([H100_JOB], fleet) == ["c"]
    fleet = [worker("w1", pool="h100", jobs=["a"]), *BUSY[1:]]
    assert preempted([H100_JOB], fleet) == ["a"]
    assert preempted([needs(gpu_class="a100")], fleet) == []
    assert preempted([needs(vram=40)], fleet) == []


def test_no_training_is_placed_on_a_worker_a_waiting_job_may_run_on() -> None:
    fleet = [worker("t4-1"), worker("h100-1", pool="h100", vram=80)]
    assert wanted_by_inference([H100_JOB], fleet, NO_POOLS) == {"h100-1"}
    assert wanted_by_inference([JOB], fleet, NO_POOLS) == {"t4-1", "h100-1"}
    assert wanted_by_inference([], fleet, NO_POOLS) == set()


SD = Requirements(model_digest="sd", vram_gib=4.0)
XL = Requirements(model_digest="xl", vram_gib=8.0)


def test_waiting_trainings_weigh_ceil_weight_times_their_number_per_needs() -> None:
    waiting = [("t1", SD), ("t2", SD), ("t3", SD), ("t4", XL)]
    counted = weighted(waiting, 0.5)
    assert [job.uid for job in counted] == ["t1", "t2", "t4"]
    assert [job.uid for job in weighted(waiting, 1.0)] == ["t1", "t2", "t3", "t4"]
    assert weighted(waiting, 0.0) == []
