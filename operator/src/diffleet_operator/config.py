"""Settings of the operator process, from DIFFLEET_OPERATOR_* environment variables."""

import os
import socket
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffleet_core.dispatch_pause import DEFAULT_CONFIGMAP
from diffleet_core.resources.generation_job import Tier


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIFFLEET_OPERATOR_")

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose GenerationJobs to serve (JSON list); empty: all",
    )
    fleet_namespace: str = Field(
        default="diffleet-system",
        description="Namespace of the workers' Leases and pods; the GPUPools served are those"
        " labelled diffleet.io/fleet with it (unlabelled ones: diffleet-system)",
    )
    worker_image: str = Field(
        default="diffleet-worker:latest",
        description="Image of the worker pods whose GPUPool template names none",
    )
    identity: str = Field(default_factory=default_identity, description="Leader election id")
    leader_lease: str = Field(default="diffleet-operator", description="Leader election Lease")
    leader_lease_seconds: float = Field(default=15.0, gt=0)
    leader_renew_seconds: float = Field(default=2.0, gt=0)
    progress_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="At most one progress status patch per job this often (jobs annotated "
        "diffleet.io/progress: status)",
    )
    status_window_seconds: float = Field(
        default=0.5,
        ge=0,
        description="A job's status changes within this long of the first go in one write; "
        "a final phase is written at once",
    )
    event_tally_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Routine job Events (Dispatched, Started, Succeeded) are posted as one "
        "Event per namespace and reason this often",
    )
    requeue_backoff_seconds: float = Field(default=1.0, ge=0, description="First requeue delay")
    requeue_backoff_max_seconds: float = Field(default=60.0, ge=0)
    queued_status_delay_seconds: float = Field(
        default=30.0,
        ge=0,
        description="An admitted job not yet dispatched has Queued written after this long "
        "(at once when no worker can take it); one dispatched sooner gets Queued and "
        "Scheduled in one status write",
    )
    housekeeping_interval_seconds: float = Field(default=0.5, gt=0)
    tier_weights: dict[Tier, int] = Field(
        default_factory=lambda: {Tier.ENTERPRISE: 8, Tier.PRO: 4, Tier.STANDARD: 2, Tier.FREE: 1},
        description="Dispatch shares when every tier has work (anti-starvation)",
    )
    prefetch_per_queue: int = Field(
        default=256,
        ge=1,
        description="Admitted jobs held per tenant queue (one per tier and job namespace)",
    )
    autoscaler_sweep_seconds: float = Field(
        default=5.0, gt=0, description="The autoscaler decides at least this often"
    )
    autoscaler_run_seconds: float = Field(
        default=10.0, gt=0, description="A model's run time, until runs of it are observed"
    )
    autoscaler_model_load_seconds: float = Field(
        default=20.0, ge=0, description="Loading a model on a worker, until observed"
    )
    autoscaler_worker_start_seconds: float = Field(
        default=30.0,
        ge=0,
        description="From deciding a new worker to its Lease announced, until observed",
    )
    dispatch_configmap: str = Field(
        default=DEFAULT_CONFIGMAP,
        description='ConfigMap in the fleet namespace whose data.paused "true" stops new'
        " dispatches (diffleet-admin drain)",
    )
    metrics_port: int = Field(default=8081, ge=0, description="Prometheus /metrics; 0: off")
    listen_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - in a pod: its own network namespace
        description="Address the metrics and readiness servers bind (a pod's IP, where pods "
        "share a host, as on the local stack)",
    )
    liveness_endpoint: str = Field(default="http://127.0.0.1:8080/healthz")
    readiness_port: int = Field(
        default=0,
        ge=0,
        description="GET /readyz: 503 while the API server or (leading) RabbitMQ is "
        "unreachable; 0: off (a pod sets it, with its readinessProbe)",
    )
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    training_prefetch: int = Field(
        default=64, ge=1, description="Admitted TrainingJobs held from the training queue"
    )
    training_schedule_interval_seconds: float = Field(
        default=0.1,
        gt=0,
        description="The training scheduler looks at the fleet and the inference queues this"
        " often (dispatch below inference, preemption)",
    )
    training_progress_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="At most one progress status write (step, stepsRun, loss) per training"
        " this often",
    )
    training_demand_weight: float = Field(
        default=0.5,
        ge=0,
        description="Waiting trainings count in their pool's demand as ceil(weight x count)",
    )
    training_max_failures: int = Field(
        default=3,
        ge=1,
        description="A training is Failed at a retryable failure once this many of its"
        " attempts ended other than by preemption (failed, worker lost)",
    )
    training_startup_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="After start-up, a running training's worker missing from the fleet is"
        " taken as lost only past this long (the workers' Leases are listed by then)",
    )


@lru_cache
def get_operator_settings() -> OperatorSettings:
    return OperatorSettings()
