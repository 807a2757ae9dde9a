"""ModelCache (diffleet.io/v1alpha1): one model artifact and how warm the fleet keeps it."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, StrictFloat, StrictInt, model_validator

from diffleet_core.resources.base import SpecModel, StatusModel
from diffleet_core.resources.conditions import Condition
from diffleet_core.resources.generation_job import ControlType, ModelName, S3Uri
from diffleet_core.resources.text import NO_CONTROL_CHARACTERS, PoolName

KIND = "ModelCache"
PLURAL = "modelcaches"

Sha256 = Annotated[str, Field(pattern=r"^[a-f0-9]{64}$"), NO_CONTROL_CHARACTERS]


class ModelFormat(StrEnum):
    DIFFUSERS = "diffusers"
    SAFETENSORS = "safetensors"


class ModelType(StrEnum):
    CHECKPOINT = "checkpoint"
    LORA = "lora"
    CONTROLNET = "controlnet"
    # A T2I-Adapter: conditioning like a ControlNet's, for text to image only.
    T2I_ADAPTER = "t2i-adapter"
    VAE = "vae"
    EMBEDDING = "embedding"
    UPSCALER = "upscaler"
    RESTORER = "restorer"
    SAFETY = "safety"
    # A ControlNet preprocessor with weights (depth, segmentation).
    DETECTOR = "detector"
    IP_ADAPTER = "ip-adapter"
    # The CLIP vision encoder an IP-Adapter reads its reference images with.
    IMAGE_ENCODER = "image-encoder"
    # AnimateDiff's temporal layers, added to an sd15 checkpoint for txt2vid.
    MOTION_ADAPTER = "motion-adapter"
    BACKGROUND_REMOVER = "background-remover"

    @property
    def has_family(self) -> bool:
        """Whether the artifact belongs to a model family (and names it in baseModel):
        what plugs into a Stable Diffusion pipeline does; what works on pixels does not."""
        return self not in PIXEL_MODEL_TYPES


# Model types that work on images, whatever the checkpoint.
PIXEL_MODEL_TYPES = frozenset(
    {
        ModelType.UPSCALER,
        ModelType.RESTORER,
        ModelType.SAFETY,
        ModelType.DETECTOR,
        ModelType.IMAGE_ENCODER,
        ModelType.BACKGROUND_REMOVER,
    }
)
# Model types that come as one safetensors file, and those that come as a folder.
SINGLE_FILE_TYPES = (ModelType.EMBEDDING, ModelType.RESTORER, ModelType.IP_ADAPTER)
FOLDER_TYPES = (
    ModelType.T2I_ADAPTER,
    ModelType.SAFETY,
    ModelType.DETECTOR,
    ModelType.IMAGE_ENCODER,
    ModelType.MOTION_ADAPTER,
    ModelType.BACKGROUND_REMOVER,
)
# The models a job's controlNets entries name: each entry is one of these.
CONDITIONING_TYPES = (ModelType.CONTROLNET, ModelType.T2I_ADAPTER)
# The detectors the worker runs (transformers depth-estimation and segmentation models).
DETECTOR_CONTROL_TYPES = (ControlType.DEPTH, ControlType.SEGMENTATION)


class BaseModelFamily(StrEnum):
    SD15 = "sd15"
    SDXL = "sdxl"
    # Stable Video Diffusion (image-to-video checkpoints).
    SVD = "svd"


class WarmSpec(SpecModel):
    replicas: StrictInt = Field(
        default=0, ge=0, le=1000, description="Keep the model hot on at least this many workers."
    )


class ModelCacheSpec(SpecModel):
    """Where a model is and how to keep it. `source` is immutable."""

    source: S3Uri = Field(description="A diffusers folder or a single .safetensors file.")
    format: ModelFormat = Field(description="diffusers (folder) or safetensors (single file).")
    type: ModelType = Field(default=ModelType.CHECKPOINT, description="What the artifact is.")
    base_model: BaseModelFamily | None = Field(
        default=None,
        description="Model family: sd15, sdxl or svd. Required for checkpoint, lora,"
        " controlnet, t2i-adapter, embedding, vae, ip-adapter and motion-adapter; not allowed"
        " for the others.",
    )
    control_type: ControlType | None = Field(
        default=None,
        description="What the conditioning image shows: required for controlnet, t2i-adapter"
        " and detector (a detector's must be depth or segmentation), not allowed for other"
        " types.",
    )
    image_encoder: ModelName | None = Field(
        default=None,
        description="ip-adapter: the ModelCache (type image-encoder) its reference images are"
        " encoded with, looked up like a job's models.",
    )
    sha256: Sha256 | None = Field(
        default=None,
        description="Expected digest; for a folder, of its manifest.",
    )
    size_bytes: StrictInt | None = Field(default=None, ge=0, description="Size of the artifact.")
    vram_gib: StrictFloat = Field(
        default=4.0,
        ge=0.0,
        le=1024.0,
        alias="vramGiB",
        description="GPU memory the model needs, in GiB.",
    )
    pools: list[PoolName] | None = Field(
        default=None, description="Pools allowed to run it; empty: any with enough VRAM."
    )
    warm: WarmSpec = Field(default_factory=WarmSpec, description="Pre-warming policy.")

    @model_validator(mode="after")
    def check_rules(self) -> Self:
        """The CRD's cross-field CEL rules, with the same messages."""
        for rule in model_cache_rule_violations(self):
            raise ValueError(rule)
        return self


BASE_MODEL_RULE = (
    "baseModel is required for checkpoint, lora, controlnet, t2i-adapter, embedding, vae,"
    " ip-adapter and motion-adapter, and not allowed for the other types"
)
SINGLE_FILE_RULE = "format must be safetensors for embedding, restorer and ip-adapter models"
# Each of these comes with configuration files beside its weights.
FOLDER_RULE = (
    "format must be diffusers for t2i-adapter, safety, detector, image-encoder,"
    " motion-adapter and background-remover models"
)
CONTROL_TYPE_RULE = (
    "controlType is required for controlnet, t2i-adapter and detector models, and not allowed"
    " for other types"
)
DETECTOR_RULE = (
    "controlType of a detector must be depth or segmentation (the detectors the worker runs)"
)
IMAGE_ENCODER_RULE = (
    "imageEncoder is required for ip-adapter models, and not allowed for other types"
)


def model_cache_rule_violations(spec: ModelCacheSpec) -> list[str]:
    """Messages of the cross-field rules `spec` breaks (the CRD's CEL rules)."""
    conditioned = spec.type in (*CONDITIONING_TYPES, ModelType.DETECTOR)
    checks = [
        (
            (spec.base_model is not None) != spec.type.has_family,
            BASE_MODEL_RULE,
        ),
        (
            spec.type in SINGLE_FILE_TYPES and spec.format is not ModelFormat.SAFETENSORS,
            SINGLE_FILE_RULE,
        ),
        (
            spec.type in FOLDER_TYPES and spec.format is not ModelFormat.DIFFUSERS,
            FOLDER_RULE,
        ),
        ((spec.control_type is not None) != conditioned, CONTROL_TYPE_RULE),
        (
            spec.type is ModelType.DETECTOR
            and spec.control_type is not None
            and spec.control_type not in DETECTOR_CONTROL_TYPES,
            DETECTOR_RULE,
        ),
        (
            (spec.image_encoder is not None) != (spec.type is ModelType.IP_ADAPTER),
            IMAGE_ENCODER_RULE,
        ),
    ]
    return [message for broken, message in checks if broken]


class ModelCachePhase(StrEnum):
    PENDING = "Pending"
    VERIFYING = "Verifying"
    READY = "Ready"
    FAILED = "Failed"


class ModelCacheStatus(StatusModel):
    phase: ModelCachePhase | None = None
    digest: str | None = None
    size_bytes: int | None = Field(default=None, ge=0)
    hot_workers: list[str] | None = None
    warm_workers: list[str] | None = None
    hot_replicas: int = Field(default=0, ge=0)
    warm_replicas: int = Field(default=0, ge=0)
    last_used_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
