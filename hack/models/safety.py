"""The tiny output classifiers: diffusers' StableDiffusionSafetyChecker with a tiny CLIP
vision tower, and its CLIPImageProcessor, in one folder (config.json, model.safetensors,
preprocessor_config.json), as the released safety checker is laid out.

The checker flags an image when the cosine similarity of its embedding to a concept
embedding exceeds that concept's threshold. Similarities lie in [-1, 1], so thresholds
of 2 flag nothing and thresholds of -2 flag everything, whatever the random weights
make of the image: the two verdicts are fixed.
"""

from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPImageProcessor

from hack.models import components
from hack.models.untyped import StableDiffusionSafetyChecker

IMAGE_SIZE = 32
FLAGS_NOTHING = 2.0
FLAGS_EVERYTHING = -2.0


def clip_config() -> CLIPConfig:
    """The checker uses only the vision tower and the projection; the text tower is the
    smallest CLIPConfig accepts."""
    return CLIPConfig(
        text_config={
            "hidden_size": 8,
            "intermediate_size": 8,
            "num_attention_heads": 1,
            "num_hidden_layers": 1,
            "vocab_size": 16,
            "max_position_embeddings": 8,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": components.TEXT_HIDDEN,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=components.TEXT_HIDDEN,
    )


def image_processor() -> CLIPImageProcessor:
    """CLIP's preprocessing (resize, centre crop, normalise) at the tower's input size."""
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )


def checker(threshold: float) -> Any:
    components.seeded(60)
    model = StableDiffusionSafetyChecker(clip_config())
    with torch.no_grad():
        for embeds in (model.concept_embeds, model.special_care_embeds):
            embeds.copy_(torch.randn(embeds.shape))
        for weights in (model.concept_embeds_weights, model.special_care_embeds_weights):
            weights.fill_(threshold)
    model.train(False)
    return model


def write(out: Path, threshold: float) -> None:
    checker(threshold).save_pretrained(out, safe_serialization=True)
    image_processor().save_pretrained(out)


def build_permissive(out: Path) -> None:
    """tiny-safety: flags nothing."""
    write(out, FLAGS_NOTHING)


def build_strict(out: Path) -> None:
    """tiny-safety-strict: flags every image."""
    write(out, FLAGS_EVERYTHING)
