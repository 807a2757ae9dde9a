"""Prometheus metrics of the operator (served on /metrics when metrics_port is set)."""

import contextlib

from prometheus_client import Counter, Gauge, Histogram

TRANSITIONS = Counter(
    "diffleet_job_transitions_total", "GenerationJob phase transitions", ["phase"]
)
ADMISSION_SECONDS = Histogram(
    "diffleet_admission_seconds", "Job creation to Queued", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5)
)
DISPATCH_SECONDS = Histogram(
    "diffleet_dispatch_seconds",
    "Job creation to Scheduled",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
PLACEMENTS = Counter("diffleet_placements_total", "Placement decisions", ["outcome"])
REQUEUES = Counter("diffleet_requeues_total", "Jobs requeued after a failure", ["reason"])
QUEUE_DEPTH = Gauge("diffleet_queue_depth", "Admitted jobs waiting, per tier", ["tier"])
WORKERS = Gauge("diffleet_workers", "Live workers, per pool", ["pool"])
POOL_DESIRED_REPLICAS = Gauge(
    "diffleet_pool_desired_replicas", "Workers the autoscaler wants, per GPUPool", ["pool"]
)
POOL_QUEUED_JOBS = Gauge(
    "diffleet_pool_queued_jobs", "Admitted jobs waiting for a worker, per GPUPool", ["pool"]
)
POOL_AT_MAX_REPLICAS = Gauge(
    "diffleet_pool_at_max_replicas",
    "1 while a GPUPool is at maxReplicas with more jobs than its workers carry, else 0",
    ["pool"],
)
# What the GPUPool's status says (replicas, readyReplicas, busyReplicas).
POOL_REPLICAS = Gauge(
    "diffleet_pool_replicas", "Worker pods that count (not finished), per GPUPool", ["pool"]
)
POOL_READY_REPLICAS = Gauge(
    "diffleet_pool_ready_replicas",
    "Worker pods whose worker holds its Lease, per GPUPool",
    ["pool"],
)
POOL_BUSY_REPLICAS = Gauge(
    "diffleet_pool_busy_replicas", "Worker pods running jobs, per GPUPool", ["pool"]
)
PER_POOL = (
    POOL_DESIRED_REPLICAS,
    POOL_QUEUED_JOBS,
    POOL_AT_MAX_REPLICAS,
    POOL_REPLICAS,
    POOL_READY_REPLICAS,
    POOL_BUSY_REPLICAS,
)
WORKERS_LOST = Counter(
    "diffleet_workers_lost_total",
    "Workers whose Lease expired (their jobs were recovered), per GPUPool",
    ["pool"],
)
MODEL_VERIFICATIONS = Counter(
    "diffleet_model_verifications_total",
    "ModelCache artifact verifications, by outcome (verified, refused: the ModelCache's"
    " status says why)",
    ["outcome"],
)
# Counters exist at 0 from the start, so that their first increment is an increase.
for _outcome in ("verified", "refused"):
    MODEL_VERIFICATIONS.labels(_outcome)
AUTOSCALER_DECISION_SECONDS = Histogram(
    "diffleet_autoscaler_decision_seconds",
    "From a change of demand (admission, dispatch, result) to the autoscaler's decision applied",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
RECORDS_QUARANTINED = Counter(
    "diffleet_operator_records_quarantined_total",
    "Records (jobs, ModelCaches, Leases, messages) whose handling failed for a reason of "
    "their own, set aside so that the loop goes on",
    ["loop"],
)
EVENTS_DROPPED = Counter(
    "diffleet_events_dropped_total", "Kubernetes Events dropped because the queue was full"
)
STALE_REPORTS = Counter(
    "diffleet_stale_reports_total",
    "Worker reports dropped because their job had finished, gone or moved to another "
    "attempt (a late or reordered report)",
)

TRAININGS_DISPATCHED = Counter(
    "diffleet_trainings_dispatched_total", "TrainingJob attempts dispatched to workers"
)
TRAINING_PREEMPTIONS = Counter(
    "diffleet_training_preemptions_total",
    "Trainings stopped at a step boundary (and queued again) so that inference took their slot",
)
TRAINING_PREEMPTION_SECONDS = Histogram(
    "diffleet_training_preemption_seconds",
    "From a PreemptTraining sent to the training's slot freed (its checkpoint saved)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


def forget_pool(pool: str) -> None:
    """Drops a deleted GPUPool's series, so that it stops being reported."""
    for gauge in PER_POOL:
        with contextlib.suppress(KeyError):
            gauge.remove(pool)
