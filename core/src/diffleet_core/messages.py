"""Message schemas of the worker protocol (JSON bodies of RabbitMQ messages).

    operator -> tier queue      AdmittedJob      a job waiting for a GPU
    operator -> worker queue    DispatchedJob    everything a worker needs to run it
    operator -> control         CancelJob        stop a job now
    operator -> control         WarmModel        load a model into GPU memory before a job
                                                 needs it (ModelCache spec.warm.replicas)
    worker   -> results queue   JobStarted | JobSucceeded | JobFailed   (durable, acked
                                after the operator has written them into the CR status)
    worker   -> progress        JobProgress      (transient; the API streams it)

Trainings (TrainingJob) have their own messages beside these:

    operator -> training queue  AdmittedTraining     a training waiting for a free slot
    operator -> worker queue    DispatchedTraining   train (from the latest checkpoint)
    operator -> control         PreemptTraining      save a checkpoint at the next step
                                                     boundary and give the slot back
                                CancelJob            (by uid) stop at the next step boundary
    worker   -> training results TrainingStarted | TrainingCheckpointed | TrainingStopped
                                | TrainingSucceeded | TrainingFailed   (durable)
    worker   -> progress        TrainingProgress (routing key training.<uid>; transient)

Every message names the job by uid and attempt: a message about an older attempt, or a
job that was cancelled or deleted, is stale and is dropped by its receiver.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec, JobOutput, Tier
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_core.resources.training_job import (
    TrainingCheckpoint,
    TrainingJobSpec,
    ValidationImage,
)


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


class PreemptTraining(Message):
    """On the control exchange, routed to the worker running the training: inference
    waits for its slot. The worker saves a checkpoint at the next step boundary, reports
    TrainingStopped(preempted) and frees the slot; the operator queues the training again."""

    order: Literal["preempt"] = "preempt"
    job: JobRef


# What a worker's control queue carries (their required fields tell them apart).
CONTROL_ORDER: TypeAdapter[CancelJob | WarmModel | PreemptTraining] = TypeAdapter(
    Annotated[CancelJob | WarmModel | PreemptTraining, Field(union_mode="left_to_right")]
)


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


class AdmittedTraining(Message):
    """In the training queue: a training admitted at `admitted_at`, waiting for a slot
    no inference job wants."""

    job: JobRef
    admitted_at: datetime


class DispatchedTraining(Message):
    """In a worker's queue (beside DispatchedJob, told apart by `order`): train this
    LoRA, from the latest checkpoint under the training's uid when there is one."""

    order: Literal["training"] = "training"
    job: JobRef
    spec: TrainingJobSpec
    seed: int
    # The base checkpoint (spec.baseModel, resolved).
    model: ModelRef
    # Checkpoints and validation images go to the outputs bucket, the LoRA to the models
    # bucket (diffleet_core.storage: training keys).
    output_bucket: str
    models_bucket: str


class TrainingStarted(WorkerEvent):
    """The base model is loaded and the dataset read: steps begin at `step` (the
    checkpoint it resumed from, or 0)."""

    event: Literal["training-started"] = "training-started"
    step: int = Field(ge=0)
    examples: int = Field(ge=1)


class TrainingCheckpointed(WorkerEvent):
    """A checkpoint was saved after `step` steps, with the validation images of that step."""

    event: Literal["training-checkpointed"] = "training-checkpointed"
    checkpoint: TrainingCheckpoint
    validation_images: list[ValidationImage] = Field(default_factory=list)
    # Steps run by this attempt so far.
    steps_run: int = Field(ge=0)
    loss: float | None = None


class TrainingStopped(WorkerEvent):
    """Stopped at a step boundary by a PreemptTraining (`preempted`) or a CancelJob,
    after saving the checkpoint of `step` (when it ran any step)."""

    event: Literal["training-stopped"] = "training-stopped"
    preempted: bool
    step: int = Field(ge=0)
    steps_run: int = Field(ge=0)
    checkpoint: TrainingCheckpoint | None = None


class TrainingSucceeded(WorkerEvent):
    event: Literal["training-succeeded"] = "training-succeeded"
    step: int = Field(ge=1)
    steps_run: int = Field(ge=0)
    loss: float | None = None
    # The LoRA file in the models bucket (s3:// URI), its sha256 (hex) and size.
    uri: str
    sha256: str
    size_bytes: int = Field(ge=0)
    validation_images: list[ValidationImage] = Field(default_factory=list)


class TrainingFailed(WorkerEvent):
    """`reason`: a DatasetReason when the dataset is refused, else a conditions.Reason."""

    event: Literal["training-failed"] = "training-failed"
    reason: str
    message: str = ""
    retryable: bool = False
    steps_run: int = Field(default=0, ge=0)


TrainingEvent = Annotated[
    TrainingStarted | TrainingCheckpointed | TrainingStopped | TrainingSucceeded | TrainingFailed,
    Field(discriminator="event"),
]
TRAINING_EVENT: TypeAdapter[
    TrainingStarted | TrainingCheckpointed | TrainingStopped | TrainingSucceeded | TrainingFailed
] = TypeAdapter(TrainingEvent)


class TrainingProgress(Message):
    """On the progress exchange (routing key Topology.training_progress_key(uid)): at most
    a few a second, so the operator's status and the API's stream follow the loss."""

    job: JobRef
    step: int = Field(ge=0)
    total_steps: int = Field(ge=1)
    # The mean loss of the steps since the last report.
    loss: float
    steps_run: int = Field(ge=0)
    eta_seconds: float | None = Field(default=None, ge=0)
