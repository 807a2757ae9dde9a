"""Prometheus metrics of the operator (served on /metrics when metrics_port is set)."""

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
