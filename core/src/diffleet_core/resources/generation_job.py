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
# Canvas of an outpaint (the init image and its padding), a side in pixels.
MAX_CANVAS_SIDE = 2048
# A side of the image after hiresFix, and after upscale.
MAX_HIRES_SIDE = 4096
MAX_UPSCALED_SIDE = 8192
MAX_EMBEDDINGS = 10
MAX_CONTROL_NETS = 4
MAX_IP_ADAPTERS = 4
MAX_FRAMES = 64


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
    OUTPAINT = "outpaint"
    UPSCALE = "upscale"
    IMG2VID = "img2vid"
    TXT2VID = "txt2vid"

    @property
    def takes_init_image(self) -> bool:
        return self not in (Mode.TXT2IMG, Mode.TXT2VID)

    @property
    def is_video(self) -> bool:
        return self in (Mode.IMG2VID, Mode.TXT2VID)


class OutputFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def extension(self) -> str:
        """The file name extension of an output (its S3 key ends in it)."""
        return "jpg" if self is OutputFormat.JPEG else self.value

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"


class VideoFormat(StrEnum):
    MP4 = "mp4"
    WEBP = "webp"
    GIF = "gif"

    @property
    def extension(self) -> str:
        return self.value

    @property
    def content_type(self) -> str:
        return "video/mp4" if self is VideoFormat.MP4 else f"image/{self.value}"


class ControlType(StrEnum):
    """What a ControlNet's conditioning image shows (a ModelCache's controlType)."""

    CANNY = "canny"
    DEPTH = "depth"
    OPENPOSE = "openpose"
    LINEART = "lineart"
    SOFTEDGE = "softedge"
    SCRIBBLE = "scribble"
    SEGMENTATION = "segmentation"
    TILE = "tile"


class Preprocess(StrEnum):
    """auto: the worker turns the image into the ControlNet's conditioning (its type's
    preprocessor); none: the image is the conditioning already."""

    AUTO = "auto"
    NONE = "none"


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


# Each sampler's name as Automatic1111 spells it: in an image's `parameters` text and in
# the Automatic1111 door's `sampler_name`.
SAMPLER_LABELS: dict[Sampler, str] = {
    Sampler.EULER: "Euler",
    Sampler.EULER_A: "Euler a",
    Sampler.HEUN: "Heun",
    Sampler.DPM2: "DPM2",
    Sampler.DPMPP_2M: "DPM++ 2M",
    Sampler.DPMPP_2M_KARRAS: "DPM++ 2M Karras",
    Sampler.DDIM: "DDIM",
    Sampler.LMS: "LMS",
    Sampler.UNIPC: "UniPC",
    Sampler.LCM: "LCM",
}


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
    model: ModelName = Field(
        description="Name of a ModelCache of type controlnet or t2i-adapter (a job's entries"
        " are all of one type; T2I-Adapters only in mode txt2img)."
    )
    image: S3Uri = Field(description="Control image (s3://bucket/key).")
    type: ControlType | None = Field(
        default=None,
        description="What the ControlNet expects; absent: the ModelCache's controlType (when"
        " given, it must be that).",
    )
    preprocess: Preprocess = Field(
        default=Preprocess.AUTO,
        description="auto: run the type's preprocessor on the image; none: the image is the"
        " conditioning already.",
    )
    conditioning_scale: StrictFloat = Field(
        default=1.0, ge=0.0, le=2.0, description="How strongly the control image steers."
    )
    guidance_start: StrictFloat = Field(
        default=0.0, ge=0.0, le=1.0, description="Fraction of the steps at which it starts."
    )
    guidance_end: StrictFloat = Field(
        default=1.0, ge=0.0, le=1.0, description="Fraction of the steps at which it stops."
    )

    @model_validator(mode="after")
    def check_rules(self) -> Self:
        """The CRD's rule on each entry, with the same message."""
        if self.guidance_start >= self.guidance_end:
            raise ValueError(GUIDANCE_WINDOW_RULE)
        return self


GUIDANCE_WINDOW_RULE = "guidanceStart must be less than guidanceEnd"


class IpAdapterSpec(SpecModel):
    model: ModelName = Field(description="Name of a ModelCache of type ip-adapter.")
    image: S3Uri = Field(description="Reference image (s3://bucket/key).")
    scale: StrictFloat = Field(
        default=0.6, ge=0.0, le=2.0, description="How strongly the image prompt steers."
    )


class VideoSpec(SpecModel):
    """The clip of a video mode: img2vid (Stable Video Diffusion) or txt2vid (AnimateDiff)."""

    frames: StrictInt = Field(default=14, ge=1, le=MAX_FRAMES, description="Frames generated.")
    fps: StrictInt = Field(default=7, ge=1, le=60, description="Frames per second of the file.")
    motion_bucket_id: StrictInt = Field(
        default=127, ge=0, le=255, description="img2vid: how much motion (higher: more)."
    )
    noise_aug_strength: StrictFloat = Field(
        default=0.02, ge=0.0, le=1.0, description="img2vid: noise added to the init image."
    )
    decode_chunk_size: StrictInt = Field(
        default=4, ge=1, le=MAX_FRAMES, description="img2vid: frames decoded at once (memory)."
    )
    format: VideoFormat = Field(default=VideoFormat.MP4, description="mp4, webp or gif.")
    motion_adapter: ModelName | None = Field(
        default=None,
        description="txt2vid: a ModelCache of type motion-adapter (AnimateDiff), looked up like"
        " spec.model.",
    )


class RemoveBackgroundSpec(SpecModel):
    model: ModelName = Field(description="Name of a ModelCache of type background-remover.")


class OutpaintSpec(SpecModel):
    """Pixels added on each side of the init image (resized to width x height first)."""

    left: StrictInt = Field(default=0, ge=0, le=1024, multiple_of=8, description="Pixels.")
    right: StrictInt = Field(default=0, ge=0, le=1024, multiple_of=8, description="Pixels.")
    top: StrictInt = Field(default=0, ge=0, le=1024, multiple_of=8, description="Pixels.")
    bottom: StrictInt = Field(default=0, ge=0, le=1024, multiple_of=8, description="Pixels.")
    feather_pixels: StrictInt = Field(
        default=16,
        ge=0,
        le=256,
        description="Width of the soft edge between the original and the new area.",
    )


class HiresFixSpec(SpecModel):
    """txt2img in two passes: the image, upscaled by `scale`, denoised again."""

    scale: StrictFloat = Field(default=2.0, ge=1.0, le=4.0, description="Upscale factor.")
    strength: StrictFloat = Field(
        default=0.5, ge=0.0, le=1.0, description="How much the second pass changes."
    )
    steps: StrictInt = Field(default=10, ge=1, le=150, description="Steps of the second pass.")
    latent: StrictBool = Field(
        default=True, description="Upscale the latents (true) or the decoded image (false)."
    )


class UpscaleSpec(SpecModel):
    """Super-resolution after generation, or on initImage alone in mode upscale."""

    model: ModelName = Field(description="Name of a ModelCache of type upscaler.")
    scale: StrictFloat = Field(
        default=4.0, ge=1.0, le=8.0, description="Output size over input size."
    )
    tile_size: StrictInt = Field(
        default=512,
        ge=0,
        le=2048,
        description="Input pixels per tile side (tiles overlap and blend); 0: no tiling.",
    )


class RestoreFacesSpec(SpecModel):
    model: ModelName = Field(description="Name of a ModelCache of type restorer.")
    strength: StrictFloat = Field(
        default=0.8, ge=0.0, le=1.0, description="Blend of the restored image over the original."
    )


class OutputSpec(SpecModel):
    format: OutputFormat = Field(default=OutputFormat.PNG, description="png, jpeg or webp.")
    quality: StrictInt = Field(
        default=90, ge=1, le=100, description="Quality of jpeg and webp (png is lossless)."
    )


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of a hiresFix image: each side scaled, to the nearest multiple of 8 (halves
    up; the CRD's limit on it is on the product, which CEL can say)."""
    return (int(width * scale / 8 + 0.5) * 8, int(height * scale / 8 + 0.5) * 8)


def upscaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of an upscaled image: each side scaled, to the nearest pixel (halves up)."""
    return (int(width * scale + 0.5), int(height * scale + 0.5))


class GenerationJobSpec(SpecModel):
    """What to generate. Immutable after creation, except `cancel` (false to true only)."""

    model: ModelName | None = Field(
        default=None,
        description="ModelCache (a checkpoint) to run: this namespace first, then"
        " diffleet-system. Required unless mode is upscale.",
    )
    mode: Mode = Field(
        default=Mode.TXT2IMG,
        description="txt2img, img2img, inpaint, outpaint, upscale, img2vid or txt2vid.",
    )
    prompt: Text = Field(
        default="",
        max_length=MAX_PROMPT_LENGTH,
        description="What to draw. Empty only for inpaint (object removal), upscale and img2vid.",
    )
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
    init_image: S3Uri | None = Field(
        default=None,
        description="Input image (every mode but txt2img), resized to width x height.",
    )
    mask_image: S3Uri | None = Field(default=None, description="Mask, white = repaint (inpaint).")
    strength: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="How much of the init image to change (worker default: 0.75 for img2img and"
        " inpaint, 1.0 for outpaint and for inpaint with an empty prompt).",
    )
    control_net: ControlNetSpec | None = Field(
        default=None,
        description="One ControlNet (deprecated: the shorthand of controlNets with one entry).",
    )
    control_nets: list[ControlNetSpec] | None = Field(
        default=None,
        max_length=MAX_CONTROL_NETS,
        description="ControlNet (or T2I-Adapter) guidance, each by its own control image.",
    )
    ip_adapters: list[IpAdapterSpec] | None = Field(
        default=None,
        max_length=MAX_IP_ADAPTERS,
        description="Image prompts (IP-Adapter), each a reference image with its scale.",
    )
    video: VideoSpec | None = Field(default=None, description="The clip (mode img2vid or txt2vid).")
    style: ModelName | None = Field(
        default=None,
        description="A StylePreset: this namespace first, then diffleet-system. The job's own"
        " fields win over the preset's.",
    )
    remove_background: RemoveBackgroundSpec | None = Field(
        default=None, description="Makes the background transparent (png or webp output)."
    )
    outpaint: OutpaintSpec | None = Field(
        default=None, description="Padding to fill around initImage (mode outpaint)."
    )
    hires_fix: HiresFixSpec | None = Field(
        default=None, description="A second, upscaled pass (txt2img)."
    )
    upscale: UpscaleSpec | None = Field(
        default=None,
        description="Super-resolution of the result (or, in mode upscale, of initImage resized"
        " to width x height).",
    )
    restore_faces: RestoreFacesSpec | None = Field(
        default=None, description="Face restoration of the result."
    )
    embeddings: list[ModelName] | None = Field(
        default=None,
        max_length=MAX_EMBEDDINGS,
        description="Textual-inversion ModelCaches; each is used by its name in the prompts.",
    )
    vae: ModelName | None = Field(
        default=None, description="A ModelCache of type vae to decode with."
    )
    output: OutputSpec = Field(
        default_factory=OutputSpec, description="Image file format of the outputs."
    )
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

    @property
    def primary_model(self) -> str:
        """The model the job is placed by: its checkpoint, or its upscaler in mode upscale."""
        if self.mode is Mode.UPSCALE and self.upscale is not None:
            return self.upscale.model
        assert self.model is not None, "a rule requires model unless mode is upscale"
        return self.model

    @property
    def controls(self) -> list[ControlNetSpec]:
        """The job's ControlNets: controlNets, or the deprecated single controlNet."""
        if self.control_nets is not None:
            return self.control_nets
        return [self.control_net] if self.control_net is not None else []

    @property
    def frame_count(self) -> int:
        """Frames of each output: the video's, or 1 for an image."""
        return self.video.frames if self.video is not None else 1

    @property
    def generated_size(self) -> tuple[int, int]:
        """Size of each image the denoising makes (before hiresFix and upscale): width x
        height, with the outpaint padding; the init image's size in mode upscale."""
        width, height = self.width, self.height
        if self.outpaint is not None:
            width += self.outpaint.left + self.outpaint.right
            height += self.outpaint.top + self.outpaint.bottom
        return width, height

    @property
    def output_size(self) -> tuple[int, int]:
        """Size of each output image, after outpaint, hiresFix and upscale."""
        width, height = self.generated_size
        if self.hires_fix is not None:
            width, height = hires_size(width, height, self.hires_fix.scale)
        if self.upscale is not None:
            width, height = upscaled_size(width, height, self.upscale.scale)
        return width, height


def spec_rule_violations(spec: GenerationJobSpec) -> list[str]:
    """Messages of the cross-field rules `spec` breaks (the CRD's CEL rules), in the
    CRD's order."""
    mode = spec.mode
    upscale_only = mode is Mode.UPSCALE
    checks = [
        (
            mode.takes_init_image and spec.init_image is None,
            "initImage is required unless mode is txt2img or txt2vid",
        ),
        (
            not mode.takes_init_image and spec.init_image is not None,
            "initImage is not allowed when mode is txt2img or txt2vid",
        ),
        (
            (spec.mask_image is not None) != (mode is Mode.INPAINT),
            "maskImage is required when, and only when, mode is inpaint",
        ),
        (
            spec.strength is not None and (spec.init_image is None or upscale_only),
            "strength is allowed only with an initImage, and not in mode upscale",
        ),
        (spec.model is None and not upscale_only, "model is required unless mode is upscale"),
        (
            spec.prompt == "" and mode not in (Mode.INPAINT, Mode.UPSCALE, Mode.IMG2VID),
            "prompt must not be empty unless mode is inpaint, upscale or img2vid",
        ),
        (
            (spec.outpaint is not None) != (mode is Mode.OUTPAINT),
            "outpaint is required when, and only when, mode is outpaint",
        ),
        (
            spec.outpaint is not None
            and not (spec.outpaint.left or spec.outpaint.right)
            and not (spec.outpaint.top or spec.outpaint.bottom),
            "outpaint must add pixels on at least one side",
        ),
        (
            spec.outpaint is not None and max(spec.generated_size) > MAX_CANVAS_SIDE,
            f"outpaint must keep the canvas (width + left + right, height + top + bottom) at most"
            f" {MAX_CANVAS_SIDE} pixels a side",
        ),
        (
            spec.hires_fix is not None and mode is not Mode.TXT2IMG,
            "hiresFix is allowed only when mode is txt2img",
        ),
        (
            spec.hires_fix is not None
            and max(spec.width, spec.height) * spec.hires_fix.scale > MAX_HIRES_SIDE,
            f"hiresFix.scale times width and height must be at most {MAX_HIRES_SIDE}",
        ),
        (upscale_only and spec.upscale is None, "upscale is required when mode is upscale"),
        (
            spec.upscale is not None and _upscaled_side(spec) > MAX_UPSCALED_SIDE,
            f"upscale.scale times the generated size (and hiresFix.scale) must be at most"
            f" {MAX_UPSCALED_SIDE} a side",
        ),
        (
            upscale_only
            and (
                spec.loras is not None
                or spec.control_net is not None
                or spec.control_nets is not None
                or spec.ip_adapters is not None
                or spec.embeddings is not None
                or spec.vae is not None
            ),
            "mode upscale allows no loras, controlNet(s), ipAdapters, embeddings or vae",
        ),
        (
            spec.control_net is not None and spec.control_nets is not None,
            "controlNet and controlNets are exclusive (controlNet is the deprecated form of"
            " one entry)",
        ),
        (
            (spec.video is not None) != mode.is_video,
            "video is required when, and only when, mode is img2vid or txt2vid",
        ),
        (
            spec.video is not None
            and (spec.video.motion_adapter is not None) != (mode is Mode.TXT2VID),
            "video.motionAdapter is required when, and only when, mode is txt2vid",
        ),
        (
            mode.is_video and spec.batch_size != 1,
            "batchSize must be 1 when mode is img2vid or txt2vid",
        ),
        (
            mode.is_video
            and (
                spec.hires_fix is not None
                or spec.upscale is not None
                or spec.restore_faces is not None
                or spec.remove_background is not None
                or spec.control_net is not None
                or spec.control_nets is not None
                or spec.ip_adapters is not None
            ),
            "mode img2vid and txt2vid allow no hiresFix, upscale, restoreFaces,"
            " removeBackground, controlNet(s) or ipAdapters",
        ),
        (
            mode is Mode.IMG2VID
            and (spec.loras is not None or spec.embeddings is not None or spec.vae is not None),
            "mode img2vid allows no loras, embeddings or vae",
        ),
        (
            spec.remove_background is not None and spec.output.format is OutputFormat.JPEG,
            "removeBackground needs output.format png or webp (jpeg has no alpha channel)",
        ),
    ]
    return [message for broken, message in checks if broken]


def _upscaled_side(spec: GenerationJobSpec) -> float:
    """The longer side of the upscaled image, before rounding (as the CEL rule says it)."""
    assert spec.upscale is not None
    hires_scale = spec.hires_fix.scale if spec.hires_fix is not None else 1.0
    return max(spec.generated_size) * hires_scale * spec.upscale.scale


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
    # Outputs written before formats existed were PNG files. An animated WebP is "webp"
    # with `frames`.
    format: OutputFormat | VideoFormat = OutputFormat.PNG
    sha256: str = Field(pattern=r"^[a-f0-9]{64}$")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    # Video outputs only.
    frames: int | None = Field(default=None, ge=1)
    fps: float | None = Field(default=None, gt=0)
    duration_seconds: float | None = Field(default=None, ge=0)


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
