"""The output classifier of a namespace's policy (a ModelCache of type safety): diffusers'
StableDiffusionSafetyChecker with its CLIPImageProcessor, both from one folder
(config.json, model.safetensors, preprocessor_config.json), as the released checker is
laid out. It flags an image whose CLIP embedding comes close to one of its concept
embeddings; the worker then uploads none of the job's images (finishing.py)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPImageProcessor

from diffleet_worker.device import DevicePolicy


@dataclass(frozen=True)
class SafetyChecker:
    model: Any  # StableDiffusionSafetyChecker, on the device
    processor: CLIPImageProcessor

    @property
    def components(self) -> dict[str, Any]:
        """Named as in a Stable Diffusion pipeline, so the hot tier sizes it as one."""
        return {"safety_checker": self.model, "feature_extractor": self.processor}


def load(path: Path, policy: DevicePolicy) -> SafetyChecker:
    model: Any = StableDiffusionSafetyChecker.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=policy.dtype
    )
    processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    return SafetyChecker(model.to(policy.device).eval(), processor)


def flagged(checker: SafetyChecker, images: list[Image.Image]) -> list[bool]:
    """The checker's verdict on each image: True where it found a flagged concept."""
    model = checker.model
    pixels = checker.processor(images=images, return_tensors="pt").pixel_values
    # The checker blacks out the flagged images it is given; it gets stand-ins, so only
    # its verdicts come back.
    stand_ins = [np.zeros((1, 1, 3)) for _ in images]
    with torch.inference_mode():
        _, verdicts = model(clip_input=pixels.to(model.device, model.dtype), images=stand_ins)
    return [bool(verdict) for verdict in verdicts]
