"""Background removal, a post-processing step (spec.removeBackground): a segmentation model
(a ModelCache of type background-remover: a transformers folder that
AutoModelForSemanticSegmentation and AutoImageProcessor load, with a label named
"foreground") scores each pixel, and its foreground probability becomes the image's
alpha channel. The colours stay as generated; the output is RGBA (PNG or WebP)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from diffleet_worker.device import DevicePolicy

FOREGROUND = "foreground"


@dataclass(frozen=True)
class BackgroundRemover:
    model: Any  # a transformers semantic-segmentation model, on the device
    processor: Any  # its image processor
    foreground: int  # the index of the foreground label among the model's outputs

    @property
    def components(self) -> dict[str, Any]:
        """What the hot tier sizes it by."""
        return {"segmenter": self.model}


def load(path: Path, policy: DevicePolicy) -> BackgroundRemover:
    model: Any = AutoModelForSemanticSegmentation.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=policy.dtype
    )
    labels: dict[str, int] = model.config.label2id
    if FOREGROUND not in labels:
        raise ValueError(
            f"the segmentation model at {path} has no {FOREGROUND!r} label (it has "
            f"{', '.join(labels)})"
        )
    processor = AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call]
        path, local_files_only=True
    )
    return BackgroundRemover(model.to(policy.device).eval(), processor, labels[FOREGROUND])


def remove(image: Image.Image, remover: BackgroundRemover) -> Image.Image:
    """The image in RGBA, its alpha the model's foreground probability at each pixel."""
    rgb = image.convert("RGB")
    model = remover.model
    pixels = remover.processor(images=rgb, return_tensors="pt").pixel_values
    with torch.inference_mode():
        logits = model(pixel_values=pixels.to(model.device, model.dtype)).logits
        # The model scores a coarser grid than the image: scores are resized to it.
        logits = torch.nn.functional.interpolate(
            logits.float(), size=(rgb.height, rgb.width), mode="bilinear", align_corners=False
        )
        probability = logits.softmax(dim=1)[0, remover.foreground]
    alpha = (probability * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    cut_out = rgb.copy()
    cut_out.putalpha(Image.fromarray(np.ascontiguousarray(alpha), mode="L"))
    return cut_out
