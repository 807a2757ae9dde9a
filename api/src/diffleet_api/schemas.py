"""Request and response bodies. A job's request body is core's `GenerationJobSpec`; these
wrap it with identity and status, camelCase on the wire like the resources. Request
bodies take camelCase names only, and no unknown field."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from diffleet_api.errors import FieldError
from diffleet_api.ledger import LedgerEntry
from diffleet_core.fleet import WorkerInventory
from diffleet_core.resources.base import wire_only
from diffleet_core.resources.generation_job import (
    GenerationJobSpec,
    GenerationJobStatus,
    ModelName,
    OutputFormat,
    Tier,
)
from diffleet_core.resources.gpu_pool import GPUPoolSpec, GPUPoolStatus
from diffleet_core.resources.model_cache import ModelCacheSpec, ModelCacheStatus, ModelType
from diffleet_core.resources.style_preset import StylePresetSpec
from diffleet_core.resources.training_job import TrainingJobSpec, TrainingJobStatus

MAX_BATCH = 100
Credits = Annotated[Decimal, PlainSerializer(float, return_type=float)]
JobSpecBody = Annotated[GenerationJobSpec, wire_only(GenerationJobSpec)]


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class JobPublic(ApiModel):
    id: str = Field(description="The job's name (the GenerationJob's metadata.name)")
    uid: str
    namespace: str
    spec: GenerationJobSpec | None = Field(
        description="The job's request; null only when it cannot be read (see invalidFields)"
    )
    status: GenerationJobStatus
    created_at: datetime
    cost: Credits | None = Field(default=None, description="Credits reserved for the job")
    queue_position: int | None = Field(
        default=None,
        description="Estimated place in its tier's queue (1 = next) while Queued, as the"
        " job history last recorded the queued jobs; null in any other phase (and in the"
        " answers of a submission or a cancel)",
    )
    outputs_deleted_at: datetime | None = Field(
        default=None,
        description="When DELETE /v1/jobs/{id}/outputs removed its output objects (shown by"
        " GET /v1/jobs/{id}); null while they are kept",
    )
    invalid_fields: list[FieldError] = Field(
        default_factory=list,
        description="What the stored job holds that its schema refuses (written before a"
        " rule existed, or past validation). Each such field is left out of spec or"
        " status; empty for a valid job",
    )

    @classmethod
    def from_resource(cls, body: dict[str, Any], cost: Decimal | None = None) -> "JobPublic":
        """Strict: raises ValidationError for a job the models refuse. The read paths
        show such a job all the same (history.public_job)."""
        meta = body["metadata"]
        return cls(
            id=meta["name"],
            uid=meta["uid"],
            namespace=meta["namespace"],
            spec=GenerationJobSpec.model_validate(body["spec"]),
            status=GenerationJobStatus.model_validate(body.get("status") or {}),
            created_at=meta["creationTimestamp"],
            cost=cost,
        )


class Quote(ApiModel):
    cost: Credits = Field(description="Credits it would reserve if submitted now")
    breakdown: dict[str, Credits] = Field(
        description="The cost by feature it uses (generation, video, adapters, hiresFix,"
        " upscale, restoreFaces, removeBackground; a training's: training); the parts sum"
        " to `cost`"
    )
    balance: Credits = Field(description="The tenant's credits available now")
    affordable: bool = Field(description="Whether `balance` covers `cost` (a submission's 402)")


class JobList(ApiModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class BatchRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSpecBody] = Field(
        min_length=1, max_length=MAX_BATCH, description="Up to 100 job specs"
    )


class BatchResult(ApiModel):
    items: list[JobPublic]


class RateLimitState(ApiModel):
    name: str = Field(description="requests (per minute), generations or uploads (per hour)")
    limit: int = Field(description="The tier's allowance per window (the bucket's capacity)")
    remaining: int = Field(description="What may be taken now, before the bucket refills")
    window_seconds: float


class Usage(ApiModel):
    tenant: str
    tier: Tier
    balance: Credits = Field(description="Credits available now (reservations deducted)")
    reserved: Credits = Field(description="Credits held by jobs not finished yet")
    ledger: list[LedgerEntry] = Field(description="Latest ledger entries, newest first")
    rate_limits: list[RateLimitState] = Field(
        default_factory=list,
        description="The tenant's rate-limit buckets as they are now; a limit the tier"
        " does not have is left out (this request has already taken its token)",
    )


class Output(ApiModel):
    index: int
    url: str = Field(description="Presigned GET URL")
    expires_at: datetime
    format: OutputFormat = Field(description="The image file's format (spec.output.format)")
    sha256: str
    width: int
    height: int


class Outputs(ApiModel):
    items: list[Output]
    source_url: str | None = Field(
        default=None,
        description="Presigned GET URL of the job's initImage (an upload or an output of"
        " this tenant), for a before/after view; null for a job without one",
    )


class UploadPublic(ApiModel):
    uri: str = Field(description="s3:// URI to put in a job (initImage, maskImage, controlNet)")
    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int


class ModelPublic(ApiModel):
    id: str
    namespace: str
    platform: bool = Field(description="True for a model of the platform (system namespace)")
    spec: ModelCacheSpec
    status: ModelCacheStatus

    @classmethod
    def from_resource(cls, body: dict[str, Any], system_namespace: str) -> "ModelPublic":
        meta = body["metadata"]
        return cls(
            id=meta["name"],
            namespace=meta["namespace"],
            platform=meta["namespace"] == system_namespace,
            spec=ModelCacheSpec.model_validate(body["spec"]),
            status=ModelCacheStatus.model_validate(body.get("status") or {}),
        )


class ModelList(ApiModel):
    items: list[ModelPublic]


class StylePublic(ApiModel):
    id: str = Field(description="The preset's name, as a job's spec.style names it")
    namespace: str
    platform: bool = Field(description="True for a preset of the platform (system namespace)")
    spec: StylePresetSpec

    @classmethod
    def from_resource(cls, body: dict[str, Any], system_namespace: str) -> "StylePublic":
        meta = body["metadata"]
        return cls(
            id=meta["name"],
            namespace=meta["namespace"],
            platform=meta["namespace"] == system_namespace,
            spec=StylePresetSpec.model_validate(body["spec"]),
        )


class StyleList(ApiModel):
    items: list[StylePublic] = Field(
        description="The tenant's own presets first, then the platform's (the order a job's"
        " spec.style is looked up in)"
    )


class ModelRegistration(ModelCacheSpec):
    """A ModelCache to create in the tenant's namespace: its name and its spec. The source
    must be under the tenant's prefix of the models bucket (where uploads go)."""

    name: ModelName = Field(description="Name of the ModelCache")


ModelRegistrationBody = Annotated[ModelRegistration, wire_only(ModelRegistration)]


TrainingSpecBody = Annotated[TrainingJobSpec, wire_only(TrainingJobSpec)]


class TrainingPublic(ApiModel):
    id: str = Field(description="The training's name (the TrainingJob's metadata.name)")
    uid: str
    namespace: str
    spec: TrainingJobSpec | None = Field(
        description="The training's request; null only when it cannot be read (see invalidFields)"
    )
    status: TrainingJobStatus
    created_at: datetime
    cost: Credits | None = Field(
        default=None, description="Credits reserved for the training (null: not created here)"
    )
    invalid_fields: list[FieldError] = Field(
        default_factory=list,
        description="What the stored training holds that its schema refuses; empty for a valid one",
    )


class TrainingList(ApiModel):
    items: list[TrainingPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class DatasetPublic(ApiModel):
    name: str
    uri: str = Field(description="s3:// folder to put in a training's spec.dataset")
    examples: int = Field(description="Images, each with its caption")
    size_bytes: int = Field(description="Bytes of the images and captions")


class DatasetList(ApiModel):
    items: list[DatasetPublic]


class PoolPublic(ApiModel):
    name: str
    fleet_namespace: str = Field(
        description="Where its workers' Leases are: its diffleet.io/fleet label, else the"
        " platform's namespace"
    )
    spec: GPUPoolSpec | None = Field(description="null only when it cannot be read")
    status: GPUPoolStatus = Field(
        description="As the operator writes it: replicas, readyReplicas, busyReplicas,"
        " queuedJobs and the autoscaler's last decision (desiredReplicas, lastScaleTime,"
        " conditions)"
    )
    invalid_fields: list[FieldError] = Field(default_factory=list)


class WorkerPublic(ApiModel):
    id: str = Field(description="The worker's Lease name (its worker id)")
    namespace: str
    renewed_at: datetime | None = Field(description="The Lease's renewTime")
    expires_at: datetime | None = Field(
        description="renewTime + leaseDurationSeconds: past it, the operator counts it gone"
    )
    inventory: WorkerInventory | None = Field(
        description="What the worker announces (pool, gpuType, node, vramGiB, concurrency,"
        " hot and warm model digests, job uids in flight, draining); null when its"
        " annotation cannot be read"
    )
    load: float | None = Field(description="Jobs in flight / concurrency")


class ScalingDecision(ApiModel):
    pool: str
    reason: str = Field(description="ScaledUp or ScaledDown")
    message: str = Field(description="desired replicas <before> -> <after>")
    at: datetime | None = Field(description="When it was last made (the Event's lastTimestamp)")


class FleetModel(ApiModel):
    id: str = Field(description="The platform's ModelCache")
    type: ModelType | None
    status: ModelCacheStatus = Field(
        description="Its digest (as workers' hot and warm lists name it), hotReplicas,"
        " warmReplicas, hotWorkers, warmWorkers, lastUsedAt"
    )


class Fleet(ApiModel):
    pools: list[PoolPublic]
    workers: list[WorkerPublic] = Field(
        description="The worker Leases of every pool's fleet namespace"
    )
    models: list[FleetModel] = Field(description="The platform namespace's ModelCaches")
    queued: dict[Tier, int] = Field(
        description="Jobs Queued by tier, every tenant's, from the job history (what the"
        " job watcher last recorded); a tier with none is absent"
    )
    decisions: list[ScalingDecision] = Field(
        default_factory=list,
        description="The autoscaler's recent decisions (the GPUPools' ScaledUp and"
        " ScaledDown Events, as long as the API server keeps Events), newest first",
    )
