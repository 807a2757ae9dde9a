"""The tiny background remover: a transformers SegFormer for semantic segmentation with
two labels, background and foreground, and its image processor, in one folder
(config.json, model.safetensors, preprocessor_config.json), the layout
AutoModelForSemanticSegmentation and AutoImageProcessor load.

Its weights are seeded random: the foreground probability it gives varies over an image
(the worker makes it the alpha channel), without meaning. They are drawn twenty times
wider than transformers' default, so that the probabilities reach towards 0 and 1 rather
than all sit near 1/2 (about 0.1 to 1 on a drawing at 64x64).
"""

from pathlib import Path

from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

from hack.models import components

INPUT_SIZE = 64
INITIALIZER_RANGE = 0.4
LABELS = {0: "background", 1: "foreground"}


def segmenter() -> SegformerForSemanticSegmentation:
    components.seeded(80)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        initializer_range=INITIALIZER_RANGE,
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
    )
    model = SegformerForSemanticSegmentation(config)
    model.train(False)
    return model


def build_background_remover(out: Path) -> None:
    """tiny-background-remover."""
    segmenter().save_pretrained(out, safe_serialization=True)
    SegformerImageProcessor(size={"height": INPUT_SIZE, "width": INPUT_SIZE}).save_pretrained(out)
