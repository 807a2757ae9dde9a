"""The worker's Prometheus metrics (served on DIFFLEET_WORKER_METRICS_PORT)."""

from prometheus_client import Counter, Gauge, Histogram

READY = Gauge(
    "diffleet_worker_ready",
    "1 while the worker reaches the API server (its last Lease renewal went through) and"
    " RabbitMQ, else 0; updated every renewal period",
    ["worker"],
)

MODEL_SERVED = Counter(
    "diffleet_worker_model_served_total",
    "Models a job needed, by the cache tier that served them (hot, warm, cold)",
    ["tier"],
)
MODEL_WARMED = Counter(
    "diffleet_worker_model_warmed_total",
    "Models loaded into the hot tier ahead of any job (warm orders), by the tier they"
    " came from (hot: already there)",
    ["tier"],
)
CHECKPOINT_LOADS = Counter(
    "diffleet_worker_checkpoint_loads_total",
    "Checkpoints loaded into the hot tier because they were not hot there (for jobs and"
    " warm orders alike), by the tier they came from (warm, cold)",
    ["tier"],
)
MODEL_DOWNLOADS = Counter(
    "diffleet_worker_model_downloads_total", "Model artifacts downloaded from S3"
)
DATASET_READS = Counter(
    "diffleet_worker_dataset_reads_total",
    "Training datasets read, by where their objects came from (disk: the worker's dataset"
    " cache, for the same listing; s3: downloaded)",
    ["tier"],
)
MODEL_CORRUPT = Counter(
    "diffleet_worker_model_corrupt_total",
    "Cached model artifacts that failed their sha256 check and were downloaded again",
)
JOBS = Counter("diffleet_worker_jobs_total", "Jobs run, by outcome", ["outcome"])
JOBS_QUARANTINED = Counter(
    "diffleet_worker_jobs_quarantined_total",
    "Job orders set aside so that the next one runs, by reason: unreadable (the order"
    " does not parse), unexpected (an error the runner did not foresee; the job failed),"
    " unreportable (its result could not be published twice; the order is dropped)",
    ["reason"],
)
RUN_SECONDS = Histogram(
    "diffleet_worker_run_seconds",
    "Time from a job's order to its images in S3",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
STEP_SECONDS = Histogram(
    "diffleet_worker_step_seconds",
    "Time of one denoising step, by GPU type",
    ["gpu_type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUT_OF_MEMORY = Counter(
    "diffleet_worker_out_of_memory_total", "Device out-of-memory errors", ["retried"]
)
TRAININGS = Counter(
    "diffleet_worker_trainings_total",
    "Training runs ended here, by outcome (succeeded, stopped: preempted or cancelled at a"
    " step boundary, failed)",
    ["outcome"],
)
TRAINING_STEPS = Counter("diffleet_worker_training_steps_total", "Training steps run")
