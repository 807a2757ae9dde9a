"""Detectors: the ControlNet preprocessors that need weights, each a ModelCache of type
detector holding a transformers folder (config.json, model.safetensors,
preprocessor_config.json). A depth-estimation model (DPT, Depth Anything...) gives the
depth map of a depth ControlNet; a semantic-segmentation model (Segformer, UperNet...)
trained on ADE20k gives the colour-coded segmentation map of a segmentation ControlNet;
which of the two, the ModelCache's controlType says."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForDepthEstimation,
    AutoModelForSemanticSegmentation,
)

from diffleet_core.resources.generation_job import ControlType
from diffleet_worker.device import DevicePolicy

# The colours segmentation ControlNets were trained on: ADE20k's 150 classes, in order.
# fmt: off
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)
# fmt: on


@dataclass(frozen=True)
class Detector:
    control_type: ControlType
    model: Any  # a transformers depth-estimation or semantic-segmentation model, on the device
    processor: Any  # its image processor

    @property
    def components(self) -> dict[str, Any]:
        """Named like a pipeline's components, so the hot tier sizes it as one."""
        return {"model": self.model, "processor": self.processor}


MODEL_CLASSES: dict[ControlType, Any] = {
    ControlType.DEPTH: AutoModelForDepthEstimation,
    ControlType.SEGMENTATION: AutoModelForSemanticSegmentation,
}


def load(path: Path, control_type: ControlType, policy: DevicePolicy) -> Detector:
    """The detector in `path`, for the ControlNet type its ModelCache declares."""
    model_class = MODEL_CLASSES.get(control_type)
    if model_class is None:
        raise ValueError(f"no {control_type.value} detector runs in diffleet")
    model = model_class.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=policy.dtype
    )
    processor = AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call]
        path, local_files_only=True
    )
    return Detector(control_type, model.to(policy.device).eval(), processor)


def detect(detector: Detector, image: Image.Image) -> Image.Image:
    """The detector's map of `image`, at its size, as RGB."""
    model = detector.model
    inputs = detector.processor(images=image.convert("RGB"), return_tensors="pt")
    with torch.inference_mode():
        output = model(pixel_values=inputs.pixel_values.to(model.device, model.dtype))
    size = (image.height, image.width)
    if detector.control_type is ControlType.DEPTH:
        return depth_map(output.predicted_depth, size)
    return segmentation_map(output.logits, size)


def depth_map(predicted: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """Relative depth (the models predict disparity: near is large) scaled to 0..255,
    near white, as depth ControlNets expect."""
    depth = torch.nn.functional.interpolate(
        predicted[:1, None].float(), size=size, mode="bicubic", align_corners=False
    )[0, 0]
    low, high = depth.min(), depth.max()
    scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
    gray = (scaled * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")


def segmentation_map(logits: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """Each pixel's most likely class, in its ADE20k colour."""
    upsampled = torch.nn.functional.interpolate(
        logits[:1].float(), size=size, mode="bilinear", align_corners=False
    )
    classes = upsampled[0].argmax(dim=0).cpu().numpy() % len(ADE20K_PALETTE)
    palette = np.asarray(ADE20K_PALETTE, dtype=np.uint8)
    return Image.fromarray(palette[classes], mode="RGB")
