"""Message schemas of the worker protocol (JSON bodies of RabbitMQ messages).

    operator -> tier queue      AdmittedJob      a job waiting for a GPU
    operator -> worker queue    DispatchedJob    everything a worker needs to run it
    operator -> control         CancelJob        stop a job now
    operator -> control         WarmModel        load a model into GPU memory before a job
                                                 needs it (ModelCache spec.warm.replicas)
    worker   -> results queue   JobStarted | JobSucceeded | JobFailed   (durable, acked
                                after the operator has written them into the CR status)
    worker   -> progress        JobProgress      (transient; the API streams it)

Every message names the job by uid and attempt: a message about an older attempt, or a
job that was cancelled or deleted, is stale and is dropped by its receiver.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec, JobOutput, Tier
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType


class Message(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class JobRef(Message):
    """Which job, and which attempt of it."""

    uid: str
    namespace: str
    name: str
    attempt: int = Field(ge=1)


class AdmittedJob(Message):
    """In a tier queue: a job admitted at `admitted_at`, waiting for a worker."""

    job: JobRef
    tier: Tier
    admitted_at: datetime


class ModelRef(Message):
    """A ModelCache, resolved: where the artifact is and what it must hash to."""

    namespace: str
    name: str
    source: str
    format: ModelFormat
    type: ModelType
    base_model: BaseModelFamily | None = None
    # A ControlNet's or a detector's (ModelCache spec.controlType).
    control_type: ControlType | None = None
    digest: str
    size_bytes: int | None = None


class DispatchedJob(Message):
    """In a worker's queue: run this job."""

    job: JobRef
    # The job's spec with its style preset applied (core/styles.py): what to run.
    spec: GenerationJobSpec
    style: str | None = None
    seed: int
    # The job's primary model (spec.primary_model): its checkpoint, or in mode upscale
    # its upscaler (then the same as `upscaler`).
    model: ModelRef
    loras: list[ModelRef] = Field(default_factory=list)
    # One per spec.controls entry, in order, with the type each expects (the entry's
    # type, or its ModelCache's controlType).
    control_nets: list[ModelRef] = Field(default_factory=list)
    control_types: list[ControlType] = Field(default_factory=list)
    # The detectors (type detector) the entries with preprocess auto need, one per type.
    detectors: list[ModelRef] = Field(default_factory=list)
    ip_adapters: list[ModelRef] = Field(default_factory=list)
    # The image encoder every IP-Adapter of the job shares (diffusers loads one).
    image_encoder: ModelRef | None = None
    motion_adapter: ModelRef | None = None
    background_remover: ModelRef | None = None
    embeddings: list[ModelRef] = Field(default_factory=list)
    vae: ModelRef | None = None
    upscaler: ModelRef | None = None
    restorer: ModelRef | None = None
    # The output classifier of the namespace's policy (diffleet-policy safetyModel).
    safety: ModelRef | None = None
    # The namespace asks for the invisible watermark (annotation diffleet.io/watermark).
    watermark: bool = False
    output_bucket: str
    deadline: datetime
    # Checkpoint digests the operator wants kept in this worker's hot tier (jobs waiting
    # in the queue need them): to load a model, the worker evicts idle models not listed
    # first (least recently used among them), and only then listed ones. Empty: plain LRU.
    keep_hot: list[str] = Field(default_factory=list)


class CancelJob(Message):
    """On the control exchange, routed to the worker running the job."""

    job: JobRef
    reason: str


class WarmModel(Message):
    """On the control exchange, routed to a worker: load this model into the hot tier
    (GPU memory) now, so that the jobs that need it start without a load."""

    order: Literal["warm"] = "warm"
    model: ModelRef


# What a worker's control queue carries (the two have disjoint required fields).
CONTROL_ORDER: TypeAdapter[CancelJob | WarmModel] = TypeAdapter(CancelJob | WarmModel)


class WorkerEvent(Message):
    job: JobRef
    worker: str
    at: datetime


class JobStarted(WorkerEvent):
    event: Literal["started"] = "started"


class JobSucceeded(WorkerEvent):
    event: Literal["succeeded"] = "succeeded"
    outputs: list[JobOutput]
    model_digest: str
    lora_digests: dict[str, str] = Field(default_factory=dict)


class JobFailed(WorkerEvent):
    event: Literal["failed"] = "failed"
    reason: str
    message: str = ""
    retryable: bool = False


ResultEvent = Annotated[JobStarted | JobSucceeded | JobFailed, Field(discriminator="event")]
RESULT_EVENT: TypeAdapter[JobStarted | JobSucceeded | JobFailed] = TypeAdapter(ResultEvent)


class JobProgress(Message):
    """On the progress exchange (routing key = job uid): one denoising step done."""

    job: JobRef
    step: int = Field(ge=0)
    total_steps: int = Field(ge=1)
    eta_seconds: float | None = Field(default=None, ge=0)
    preview_png_base64: str | None = None
