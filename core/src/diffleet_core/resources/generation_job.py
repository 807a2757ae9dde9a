"""GenerationJob (diffleet.io/v1alpha1): one image-generation request and its progress.

The bounds and defaults here are those of crds/generationjobs.diffleet.io.yaml, and the
cross-field rules in `GenerationJobSpec.check_rules` are the CRD's CEL rules, with the
same messages, so kubectl and the REST API refuse the same input in the same words.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

import httpx
from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt, model_validator
from pydantic_core import PydanticCustomError

from diffleet_core.resources.base import SpecModel, StatusModel
from diffleet_core.resources.conditions import Condition
from diffleet_core.resources.text import NO_CONTROL_CHARACTERS, GpuType, Text

KIND = "GenerationJob"
PLURAL = "generationjobs"
# The operator's finalizer: deleting a job cancels it first. The admission policy in
# manifests/admission/ puts it on at creation; the operator adds it where that policy is
# not installed.
FINALIZER = "diffleet.io/operator"
# A job annotated `diffleet.io/progress: status` has its denoising progress written into
# `status.progress` while it runs (at most once a second); others get only the final
# step, with their result. Live progress streams from RabbitMQ either way (the API's SSE).
PROGRESS_ANNOTATION = "diffleet.io/progress"
PROGRESS_IN_STATUS = "status"

# s3://bucket/key: a key of one or more segments, none of them empty, "." or "..", and
# no control characters; a folder ends in /.
_SEGMENT_CHARACTER = r"[^/\x00-\x1f\x7f]"
_SEGMENT = (
    rf"([^/\x00-\x1f\x7f.]{_SEGMENT_CHARACTER}*"
    rf"|\.[^/\x00-\x1f\x7f.]{_SEGMENT_CHARACTER}*"
    rf"|\.\.{_SEGMENT_CHARACTER}+)"
)
S3_URI_PATTERN = rf"^s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](/{_SEGMENT})+/?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# http(s)://[userinfo@]host[:port][/path][?query][#fragment]: a host that is not empty and
# a port from 1 to 65535, as the CRD can say it; `parse_http_url` then parses it for real.
WEBHOOK_URL_PATTERN = (
    r"^https?://"
    r"([^\x00-\x20\x7f/?#@]*@)?"
    r"([^\x00-\x20\x7f/?#@:\[\]\\]+|\[[0-9A-Fa-f:.]+\])"
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    r"([/?#][^\x00-\x20\x7f]*)?$"
)
# spec.gpuClass: any GPU type; every other value is a GPU type (GPUPool spec.gpuType).
ANY_GPU_CLASS = "any"
MAX_PROMPT_LENGTH = 2000
MAX_SEED = 2**32 - 1


def parse_http_url(value: str) -> str:
    """`value` unchanged once httpx, which sends the webhooks, parses it to an http(s) URL
    with a host and a port it can connect to."""
    try:
        url = httpx.URL(value)
        scheme, host, port = url.scheme, url.host, url.port  # the host is decoded (IDNA) here
    except (httpx.InvalidURL, UnicodeError) as error:  # IDNAError is a UnicodeError
        raise PydanticCustomError(
            "url_parsing", "not a URL: {error}", {"error": str(error)}
        ) from error
    if scheme not in ("http", "https") or not host:
        raise PydanticCustomError("url_parsing", "an http or https URL with a host is required")
    if port is not None and not 1 <= port <= 65535:
        raise PydanticCustomError("url_parsing", "port {port} is not 1 to 65535", {"port": port})
    return value


ModelName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN), NO_CONTROL_CHARACTERS
]
S3Uri = Annotated[str, Field(max_length=2048, pattern=S3_URI_PATTERN), NO_CONTROL_CHARACTERS]
WebhookUrl = Annotated[
    str,
    Field(max_length=2048, pattern=WEBHOOK_URL_PATTERN),
    NO_CONTROL_CHARACTERS,
    AfterValidator(parse_http_url),
]


class Mode(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


class Sampler(StrEnum):
    EULER = "euler"
    EULER_A = "euler_a"
    HEUN = "heun"
    DPM2 = "dpm2"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2M_KARRAS = "dpmpp_2m_karras"
    DDIM = "ddim"
    LMS = "lms"
    UNIPC = "unipc"
    LCM = "lcm"


class Tier(StrEnum):
    """Service tiers, highest first. A namespace's tier is its label diffleet.io/tier."""

    ENTERPRISE = "enterprise"
    PRO = "pro"
    STANDARD = "standard"
    FREE = "free"

    @property
    def rank(self) -> int:
        """0 for the highest tier; a larger rank is a lower tier."""
        return list(Tier).index(self)


class LoraRef(SpecModel):
    model: ModelName = Field(description="Name of a ModelCache of type lora.")
    weight: StrictFloat = Field(default=1.0, ge=-2.0, le=2.0, description="Strength of the LoRA.")


class ControlNetSpec(SpecModel):
    model: ModelName = Field(description="Name of a ModelCache of type controlnet.")
    image: S3Uri = Field(description="Control image (s3://bucket/key).")
    conditioning_scale: StrictFloat = Field(
        default=1.0, ge=0.0, le=2.0, description="How strongly the control image steers."
    )


class GenerationJobSpec(SpecModel):
    """What to generate. Immutable after creation, except `cancel` (false to true only)."""

    model: ModelName = Field(
        description="ModelCache to run: this namespace first, then diffleet-system."
    )
    mode: Mode = Field(default=Mode.TXT2IMG, description="txt2img, img2img or inpaint.")
    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT_LENGTH, description="What to draw.")
    negative_prompt: Text = Field(
        default="", max_length=MAX_PROMPT_LENGTH, description="What not to draw."
    )
    width: StrictInt = Field(default=512, ge=64, le=2048, multiple_of=8, description="Pixels.")
    height: StrictInt = Field(default=512, ge=64, le=2048, multiple_of=8, description="Pixels.")
    steps: StrictInt = Field(default=20, ge=1, le=150, description="Denoising steps.")
    guidance_scale: StrictFloat = Field(
        default=7.0, ge=0.0, le=30.0, description="Classifier-free guidance scale."
    )
    sampler: Sampler = Field(default=Sampler.EULER_A, description="Scheduler of the denoising.")
    seed: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Random seed; when absent the operator picks one (status.seed).",
    )
    batch_size: StrictInt = Field(default=1, ge=1, le=8, description="Images per job.")
    loras: list[LoraRef] | None = Field(
        default=None, max_length=5, description="LoRAs applied, each with its weight."
    )
    init_image: S3Uri | None = Field(default=None, description="Input image (img2img, inpaint).")
    mask_image: S3Uri | None = Field(default=None, description="Mask, white = repaint (inpaint).")
    strength: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="How much of the init image to change (img2img, inpaint; worker default 0.75).",
    )
    control_net: ControlNetSpec | None = Field(default=None, description="ControlNet guidance.")
    priority: Tier | None = Field(
        default=None, description="Lowers (never raises) the tier of the job's namespace."
    )
    gpu_class: GpuType = Field(
        default=ANY_GPU_CLASS, description="GPU type to run on (a GPUPool's gpuType), or any."
    )
    timeout_seconds: StrictInt = Field(
        default=600, ge=1, le=86400, description="Fails the job (Timeout) after this long."
    )
    max_retries: StrictInt = Field(
        default=2, ge=0, le=10, description="Requeues after a lost worker before WorkerLost."
    )
    ttl_seconds_after_finished: StrictInt = Field(
        default=86400, ge=0, le=2592000, description="Deletes the finished job after this long."
    )
    webhook_url: WebhookUrl | None = Field(
        default=None,
        description="The terminal state is POSTed here, HMAC-signed.",
    )
    cancel: StrictBool = Field(default=False, description="Set to true to cancel the job.")

    @model_validator(mode="after")
    def check_rules(self) -> Self:
        """The CRD's cross-field CEL rules, with the same messages."""
        for rule in spec_rule_violations(self):
            raise ValueError(rule)
        return self


def spec_rule_violations(spec: GenerationJobSpec) -> list[str]:
    """Messages of the cross-field rules `spec` breaks (the CRD's CEL rules)."""
    violations = []
    needs_init = spec.mode in (Mode.IMG2IMG, Mode.INPAINT)
    if needs_init and spec.init_image is None:
        violations.append("initImage is required when mode is img2img or inpaint")
    if not needs_init and spec.init_image is not None:
        violations.append("initImage is allowed only when mode is img2img or inpaint")
    if (spec.mask_image is not None) != (spec.mode == Mode.INPAINT):
        violations.append("maskImage is required when, and only when, mode is inpaint")
    if spec.strength is not None and spec.init_image is None:
        violations.append("strength is allowed only with an initImage")
    return violations


class JobPhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)


class Progress(StatusModel):
    step: int = Field(ge=0)
    total_steps: int = Field(ge=1)


class JobOutput(StatusModel):
    uri: str
    sha256: str = Field(pattern=r"^[a-f0-9]{64}$")
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class GenerationJobStatus(StatusModel):
    phase: JobPhase | None = None
    tier: Tier | None = None
    queue: str | None = None
    pool: str | None = None
    node: str | None = None
    worker: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    attempts: int = Field(default=0, ge=0)
    model_digest: str | None = None
    lora_digests: dict[str, str] | None = None
    progress: Progress | None = None
    outputs: list[JobOutput] | None = None
    queued_at: datetime | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
