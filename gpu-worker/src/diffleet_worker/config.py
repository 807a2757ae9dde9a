"""Settings of a worker process, from DIFFLEET_WORKER_* environment variables."""

import socket
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3


class DeviceKind(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIFFLEET_WORKER_")

    worker_id: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of the worker's Lease and queue (in a pod: the pod name)",
    )
    pool: str = Field(default="t4", description="GPU pool the worker serves")
    gpu_type: str = ""
    node: str = Field(default="", description="Node the worker runs on")
    vram_gib: float = Field(default=16.0, ge=0)
    concurrency: int = Field(
        default=1, ge=1, description="Jobs run at once; above 1 only with --simulate"
    )
    fleet_namespace: str = Field(default="diffleet-system", description="Namespace of Leases")
    # A lost worker is noticed after `lease_seconds`; renewals cost the API server
    # (fleet size / renew_seconds) writes per second (docs/worker.md, Lease).
    lease_seconds: float = Field(default=10.0, gt=0, description="Lease duration")
    renew_seconds: float = Field(default=2.0, gt=0, description="Lease heartbeat period")
    announce_check_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How soon a change of hot or warm models or draining is announced",
    )
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, description="SIGTERM grace")
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    broker_patience_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a result publish retries while RabbitMQ is away",
    )
    s3_patience_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long an output upload retries an unreachable S3 before the job"
        " is handed back to be requeued",
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="/metrics port; 0: off")
    metrics_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - in a pod: its own network namespace
        description="Address /metrics binds (Prometheus scrapes a pod at its IP)",
    )
    # Device policy (device.py).
    device: DeviceKind = Field(default=DeviceKind.AUTO, description="auto, cpu or cuda")
    precision: Precision = Field(
        default=Precision.AUTO, description="auto (cuda float16, cpu float32), or a dtype"
    )
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0: torch's default")
    deterministic: bool = Field(default=True, description="torch deterministic algorithms")
    xformers: bool = Field(default=True, description="use xformers on CUDA when installed")
    compile_unet: bool = Field(default=False, description="torch.compile the UNet (CUDA)")
    vae_tiling_pixels: int = Field(
        default=1024 * 1024, ge=0, description="Decode larger images in VAE tiles"
    )
    memory_budget_bytes: int = Field(
        default=0, ge=0, description="Simulated device memory per run (CPU); 0: unlimited"
    )
    # Model cache (cache/).
    cache_dir: Path = Field(
        default=Path("/var/cache/diffleet/models"), description="Warm tier: local disk"
    )
    disk_budget_bytes: int = Field(default=100 * GIB, ge=0, description="Warm tier budget")
    hot_budget_bytes: int = Field(
        default=12 * GIB, ge=0, description="Hot tier budget (loaded models, VRAM or RAM)"
    )
    dataset_cache_bytes: int = Field(
        default=2 * GIB,
        ge=0,
        description="Training datasets kept on disk under <cache_dir>/datasets, apart from"
        " the warm tier's budget; 0: none kept",
    )
    # Jobs.
    preview_every_steps: int = Field(
        default=5, ge=0, description="A preview rides with every Nth step; 0: none"
    )
    strength: float = Field(default=0.75, ge=0, le=1, description="img2img/inpaint default")
    mask_feather_pixels: float = Field(default=4.0, ge=0, description="Inpaint mask feather")
    # Trainings.
    training_progress_seconds: float = Field(
        default=0.5, ge=0, description="A training's loss is reported at most this often"
    )
    # Simulation (diffleet-worker --simulate): scripted timings instead of diffusers.
    simulate: bool = Field(
        default=False, description="A simulated worker, as --simulate makes one (pods of tests)"
    )
    sim_step_seconds: float = Field(default=0.02, ge=0, description="Time per denoising step")
    sim_training_step_seconds: float = Field(
        default=0.05, ge=0, description="Time per training step"
    )
    sim_load_seconds: float = Field(default=0.5, ge=0, description="Cold model load time")
    sim_warm_load_seconds: float = Field(default=0.1, ge=0, description="Warm model load time")
    sim_hot_models: list[str] = Field(default_factory=list, description="Digests hot at start")
    sim_warm_models: list[str] = Field(default_factory=list, description="Digests warm at start")
    sim_fail_reason: str = Field(default="", description="Fail every job with this reason")
    sim_gpu_profile: bool = Field(
        default=False,
        description="Model load and step times by gpu_type (sim_profiles.py) instead of"
        " the fixed sim_* timings",
    )
    sim_hot_slots: int = Field(
        default=0, ge=0, description="Checkpoints the hot tier holds at most; 0: unbounded"
    )
    sim_record_path: Path | None = Field(
        default=None,
        description="Appends one JSON line per job run (uid, worker, when taken and done,"
        " the tier its checkpoint came from): benchmarks measure waits by it",
    )


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
