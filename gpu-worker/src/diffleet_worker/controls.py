"""A job's ControlNets (or T2I-Adapters) for one run: each entry's conditioning image
(made by its type's preprocessor, or as sent with preprocess none) with its scale and
guidance window, and the ControlNets as one diffusers MultiControlNetModel, so that every
task pipeline takes one ControlNet or several the same way. T2I-Adapters (text to image
only, pipelines/adapter.py) are one T2IAdapter, or a MultiAdapter of several."""

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diffusers import MultiAdapter, MultiControlNetModel, T2IAdapter
from PIL import Image

from diffleet_core.model_rules import control_field
from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec
from diffleet_worker.detectors import Detector
from diffleet_worker.preprocessors import conditioning, module_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Control:
    """One entry: what its ControlNet sees, how strongly, and over which part of the
    denoising (fractions of the steps)."""

    image: Image.Image
    scale: float
    start: float
    end: float


@dataclass(frozen=True)
class Controls:
    # MultiControlNetModel of the entries' ControlNets, in order; with adapters, the
    # T2IAdapter, or a MultiAdapter of the entries' T2IAdapters in order.
    model: Any
    entries: list[Control]
    adapters: bool = False

    def options(self, image_key: str, size: tuple[int, int] | None = None) -> dict[str, Any]:
        """A task pipeline's control arguments: the images under `image_key` ("image" for
        text to image, "control_image" for the image-to-image pipelines), resized to
        `size` when given (the hires pass). T2I-Adapters steer every step (admission
        refuses a guidance window for them) and one alone takes its image and scale as
        such, not in a list."""
        if self.adapters:
            scales = [entry.scale for entry in self.entries]
            if len(self.entries) == 1:
                return {image_key: self.entries[0].image, "adapter_conditioning_scale": scales[0]}
            images = [entry.image for entry in self.entries]
            return {image_key: images, "adapter_conditioning_scale": scales}
        images = [
            entry.image if size is None else entry.image.resize(size, Image.Resampling.LANCZOS)
            for entry in self.entries
        ]
        return {
            image_key: images,
            "controlnet_conditioning_scale": [entry.scale for entry in self.entries],
            "control_guidance_start": [entry.start for entry in self.entries],
            "control_guidance_end": [entry.end for entry in self.entries],
        }


def prepare(
    spec: GenerationJobSpec,
    control_types: list[ControlType],
    controlnets: list[Any],
    images: Sequence[Image.Image],
    detectors: Mapping[ControlType, Detector],
) -> Controls:
    """The run's Controls from the spec's entries, their resolved types, their loaded
    ControlNets or T2IAdapters and fetched images (the same order), and the loaded
    detectors by type."""
    entries = []
    for index, (entry, control_type, image) in enumerate(
        zip(spec.controls, control_types, images, strict=True)
    ):
        field = control_field(spec, index)
        made = conditioning(field, image, control_type, entry.preprocess, detectors)
        # What each ControlNet receives, findable in the log by its digest.
        logger.info(
            "%s: %s conditioning by preprocessor %s, %dx%d, sha256 %s",
            field,
            control_type.value,
            module_name(control_type, entry.preprocess),
            made.width,
            made.height,
            image_digest(made),
        )
        entries.append(
            Control(made, entry.conditioning_scale, entry.guidance_start, entry.guidance_end)
        )
    if controlnets and all(isinstance(model, T2IAdapter) for model in controlnets):
        if len(controlnets) == 1:
            return Controls(controlnets[0], entries, adapters=True)
        return Controls(MultiAdapter(controlnets), entries, adapters=True)  # type: ignore[no-untyped-call]
    return Controls(MultiControlNetModel(controlnets), entries)  # type: ignore[no-untyped-call]


def image_digest(image: Image.Image) -> str:
    """sha256 of the image's RGB pixels, row by row."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()
