"""The ControlNet family's tiny models: ControlNets of each type for tiny-sd15 (copied
from its UNet, as diffusers' ControlNetModel.from_unet makes one to train), a canny
T2I-Adapter shaped for its UNet, and the two detectors the worker runs, a DPT depth
estimator and a Segformer segmenter, built from transformers configs with their image
processors.

Like tiny.py's models they compute noise, not pictures: each ControlNet's random
conditioning embedding and zero convolutions make its control image steer the result,
and the detectors give maps of the input's size that depend on its pixels."""

from pathlib import Path
from typing import Any

import torch
from transformers import (
    DPTConfig,
    DPTForDepthEstimation,
    DPTImageProcessor,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerImageProcessor,
)

from hack.models import components
from hack.models.untyped import ControlNetModel, T2IAdapter

# Spread of the ControlNet's zero convolutions and conditioning embedding: large enough
# that the control image visibly changes a picture.
CONTROLNET_SPREAD = 0.1
DETECTOR_IMAGE_SIZE = 32
# ADE20k's classes, which segmentation ControlNets' colours stand for.
ADE20K_CLASSES = 150


def controlnet(seed_offset: int) -> Any:
    """A ControlNet of tiny-sd15's UNet, its conditioning layers random from `seed_offset`."""
    model = ControlNetModel.from_unet(
        components.sd15_unet(), conditioning_embedding_out_channels=(8, 16, 16, 16)
    )
    generator = torch.Generator().manual_seed(components.SEED + seed_offset)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if name.startswith(("controlnet_", "controlnet_cond_embedding.")):
                spread = CONTROLNET_SPREAD if parameter.ndim > 1 else CONTROLNET_SPREAD / 10
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * spread)
    return model


def build_canny(out: Path) -> None:
    controlnet(30).save_pretrained(out, safe_serialization=True)


def build_depth(out: Path) -> None:
    controlnet(31).save_pretrained(out, safe_serialization=True)


def build_segmentation(out: Path) -> None:
    controlnet(32).save_pretrained(out, safe_serialization=True)


def build_scribble(out: Path) -> None:
    controlnet(33).save_pretrained(out, safe_serialization=True)


def build_canny_adapter(out: Path) -> None:
    """tiny-canny-adapter: a T2IAdapter whose features fit tiny-sd15's UNet. diffusers adds
    a T2I-Adapter's features to the UNet's down blocks, one each: inside a cross-attention
    block before its downsampler, after a plain block's downsampler. tiny-sd15's blocks
    (32 channels, plain; 64, cross-attention, last) thus take 32 and 64 channels, both at
    half the latent size: the layout of diffusers' full_adapter_xl (pixels unshuffled by
    16, its second level not downsampled), not of full_adapter (which keeps its first
    level at the latent size)."""
    components.seeded(36)
    adapter = T2IAdapter(
        in_channels=3,
        channels=list(components.sd15_unet().config.block_out_channels),
        num_res_blocks=1,
        downscale_factor=16,
        adapter_type="full_adapter_xl",
    )
    adapter.save_pretrained(out, safe_serialization=True)


def build_depth_detector(out: Path) -> None:
    """tiny-depth-detector: DPT (a ViT with a depth head) at 32x32 pixels."""
    components.seeded(34)
    config = DPTConfig(
        image_size=DETECTOR_IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[16, 16, 32, 32],
        fusion_hidden_size=16,
    )
    model: Any = DPTForDepthEstimation(config)
    model.save_pretrained(out, safe_serialization=True)
    size = {"height": DETECTOR_IMAGE_SIZE, "width": DETECTOR_IMAGE_SIZE}
    DPTImageProcessor(size=size).save_pretrained(out)


def build_segmentation_detector(out: Path) -> None:
    """tiny-segmentation-detector: Segformer with ADE20k's 150 classes at 32x32 pixels."""
    components.seeded(35)
    config = SegformerConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 4],
        decoder_hidden_size=16,
    )
    config.num_labels = ADE20K_CLASSES
    model: Any = SegformerForSemanticSegmentation(config)
    model.save_pretrained(out, safe_serialization=True)
    size = {"height": DETECTOR_IMAGE_SIZE, "width": DETECTOR_IMAGE_SIZE}
    SegformerImageProcessor(size=size).save_pretrained(out)
