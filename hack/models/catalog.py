"""Every test model: how it is built, where its artifact is, and how it is registered.

Builders are imported only when a model must be built, so that registering models that
are already built does not pay for importing torch and diffusers.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffleet_core.resources.generation_job import ControlType
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType

WEIGHTS = Path(__file__).resolve().parent / "weights"
MICRO_SHAPES = WEIGHTS / "micro-shapes"
LORA_FILE = "tiny-lora.safetensors"
SINGLE_FILE = "tiny-sd15.safetensors"
EMBEDDING_FILE = "tiny-embedding.safetensors"
ESRGAN_FILE = "tiny-esrgan-x4.safetensors"
RESTORER_FILE = "tiny-restoreformer.safetensors"
IP_ADAPTER_FILE = "tiny-ip-adapter.safetensors"


def builder(module: str, function: str) -> Callable[[Path], None]:
    """`hack.models.<module>.<function>`, imported when first called."""

    def build(out: Path) -> None:
        getattr(importlib.import_module(f"hack.models.{module}"), function)(out)

    return build


@dataclass(frozen=True)
class ModelDefinition:
    name: str
    description: str
    # Writes the model into an empty folder; None: committed under hack/models/weights/.
    build: Callable[[Path], None] | None
    # The artifact inside that folder: "." for the folder itself (a diffusers folder).
    artifact: str
    format: ModelFormat
    # None for the types without a family (upscaler, restorer, safety).
    base_model: BaseModelFamily | None
    type: ModelType = ModelType.CHECKPOINT
    vram_gib: float = 0.5
    registered_by_default: bool = True
    # A ControlNet's, T2I-Adapter's or detector's ControlNet type.
    control_type: ControlType | None = None
    # An ip-adapter's image encoder: the name of another model of the catalog.
    image_encoder: str | None = None


CATALOG = (
    ModelDefinition(
        "tiny-sd15",
        "Stable Diffusion 1.5 pipeline, tiny and random",
        builder("tiny", "build_sd15"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
    ),
    ModelDefinition(
        "tiny-sd15-single",
        "tiny-sd15 as one original-layout .safetensors checkpoint; loading it needs "
        "from_single_file(path, config=<the tiny-sd15 folder>), so it is opt-in",
        builder("tiny", "build_sd15_single_file"),
        SINGLE_FILE,
        ModelFormat.SAFETENSORS,
        BaseModelFamily.SD15,
        registered_by_default=False,
    ),
    ModelDefinition(
        "tiny-sdxl",
        "Stable Diffusion XL pipeline, tiny and random",
        builder("tiny", "build_sdxl"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SDXL,
    ),
    ModelDefinition(
        "tiny-lora",
        "LoRA (rank 4, UNet attention) for tiny-sd15",
        builder("tiny", "build_lora"),
        LORA_FILE,
        ModelFormat.SAFETENSORS,
        BaseModelFamily.SD15,
        ModelType.LORA,
    ),
    ModelDefinition(
        "tiny-canny",
        "canny ControlNet for tiny-sd15",
        builder("controls", "build_canny"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        ModelType.CONTROLNET,
        control_type=ControlType.CANNY,
    ),
    ModelDefinition(
        "tiny-depth",
        "depth ControlNet for tiny-sd15",
        builder("controls", "build_depth"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        ModelType.CONTROLNET,
        control_type=ControlType.DEPTH,
    ),
    ModelDefinition(
        "tiny-segmentation",
        "segmentation ControlNet for tiny-sd15",
        builder("controls", "build_segmentation"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        ModelType.CONTROLNET,
        control_type=ControlType.SEGMENTATION,
    ),
    ModelDefinition(
        "tiny-scribble",
        "scribble ControlNet for tiny-sd15",
        builder("controls", "build_scribble"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        ModelType.CONTROLNET,
        control_type=ControlType.SCRIBBLE,
    ),
    ModelDefinition(
        "tiny-canny-adapter",
        "canny T2I-Adapter for tiny-sd15",
        builder("controls", "build_canny_adapter"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        ModelType.T2I_ADAPTER,
        control_type=ControlType.CANNY,
    ),
    ModelDefinition(
        "tiny-depth-detector",
        "DPT depth estimator (ControlNet preprocessor), tiny and random",
        builder("controls", "build_depth_detector"),
        ".",
        ModelFormat.DIFFUSERS,
        None,
        ModelType.DETECTOR,
        vram_gib=0.1,
        control_type=ControlType.DEPTH,
    ),
    ModelDefinition(
        "tiny-segmentation-detector",
        "Segformer ADE20k segmenter (ControlNet preprocessor), tiny and random",
        builder("controls", "build_segmentation_detector"),
        ".",
        ModelFormat.DIFFUSERS,
        None,
        ModelType.DETECTOR,
        vram_gib=0.1,
        control_type=ControlType.SEGMENTATION,
    ),
    ModelDefinition(
        "tiny-embedding",
        "textual-inversion embedding (two vectors) for tiny-sd15",
        builder("tiny", "build_embedding"),
        EMBEDDING_FILE,
        ModelFormat.SAFETENSORS,
        BaseModelFamily.SD15,
        ModelType.EMBEDDING,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "tiny-vae",
        "VAE of tiny-sd15's layout with other random weights",
        builder("tiny", "build_vae"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        ModelType.VAE,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "tiny-esrgan-x4",
        "ESRGAN x4 upscaler for spandrel, near-identity (colours survive)",
        builder("upscalers", "build_esrgan"),
        ESRGAN_FILE,
        ModelFormat.SAFETENSORS,
        None,
        ModelType.UPSCALER,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "tiny-sd-x4-upscaler",
        "Stable Diffusion x4 upscaler pipeline, tiny and random",
        builder("upscalers", "build_sd_x4_upscaler"),
        ".",
        ModelFormat.DIFFUSERS,
        None,
        ModelType.UPSCALER,
    ),
    ModelDefinition(
        "tiny-restoreformer",
        "RestoreFormer face restorer for spandrel, tiny and random",
        builder("restorers", "build_restoreformer"),
        RESTORER_FILE,
        ModelFormat.SAFETENSORS,
        None,
        ModelType.RESTORER,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "tiny-safety",
        "Stable Diffusion safety checker that flags nothing",
        builder("safety", "build_permissive"),
        ".",
        ModelFormat.DIFFUSERS,
        None,
        ModelType.SAFETY,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "tiny-safety-strict",
        "Stable Diffusion safety checker that flags every image",
        builder("safety", "build_strict"),
        ".",
        ModelFormat.DIFFUSERS,
        None,
        ModelType.SAFETY,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "tiny-image-encoder",
        "CLIP vision encoder with projection, tiny and random (tiny-ip-adapter's)",
        builder("ip_adapter", "build_image_encoder"),
        ".",
        ModelFormat.DIFFUSERS,
        None,
        ModelType.IMAGE_ENCODER,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "tiny-ip-adapter",
        "IP-Adapter (image prompt) for tiny-sd15, reading images with tiny-image-encoder",
        builder("ip_adapter", "build_ip_adapter"),
        IP_ADAPTER_FILE,
        ModelFormat.SAFETENSORS,
        BaseModelFamily.SD15,
        ModelType.IP_ADAPTER,
        vram_gib=0.1,
        image_encoder="tiny-image-encoder",
    ),
    ModelDefinition(
        "tiny-background-remover",
        "SegFormer segmenting background and foreground, tiny and random",
        builder("background", "build_background_remover"),
        ".",
        ModelFormat.DIFFUSERS,
        None,
        ModelType.BACKGROUND_REMOVER,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "micro-shapes",
        "micro model trained here: coloured circles, squares and triangles at 64x64",
        None,
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
    ),
    ModelDefinition(
        "tiny-svd",
        "Stable Video Diffusion image-to-video pipeline, tiny and random",
        builder("video", "build_svd"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SVD,
    ),
    ModelDefinition(
        "tiny-motion",
        "AnimateDiff motion adapter for tiny-sd15's UNet, tiny and random",
        builder("video", "build_motion_adapter"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        ModelType.MOTION_ADAPTER,
        vram_gib=0.1,
    ),
    ModelDefinition(
        "bench-sd15",
        "small (not tiny) random Stable Diffusion 1.5 pipeline for the worker benchmark",
        builder("bench", "build"),
        ".",
        ModelFormat.DIFFUSERS,
        BaseModelFamily.SD15,
        vram_gib=1.0,
        registered_by_default=False,
    ),
)
BY_NAME = {definition.name: definition for definition in CATALOG}
DEFAULT = tuple(definition.name for definition in CATALOG if definition.registered_by_default)


def definition(name: str) -> ModelDefinition:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(BY_NAME)}") from None
