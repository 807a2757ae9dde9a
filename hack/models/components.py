"""Seeded, randomly initialised components of the tiny Stable Diffusion pipelines.

Each factory seeds torch itself, so a component is the same tensors whatever was built
before it. The shapes follow diffusers' own fast-test dummies, except the VAE, which
keeps Stable Diffusion's 8x downscale so that ControlNets and default image sizes
behave as with the real models.
"""

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from hack.models.tokenizer import END_TOKEN, MAX_LENGTH, START_TOKEN, learn, write_tokenizer
from hack.models.untyped import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)

SEED = 0
TEXT_HIDDEN = 32

# Stable Diffusion 1.5's noise schedule (scaled_linear, 1000 steps).
SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def seeded(offset: int) -> None:
    torch.manual_seed(SEED + offset)


def text_config() -> CLIPTextConfig:
    """Sized for our tokenizer; its special tokens are CLIP's (start, end = padding)."""
    vocab = learn().vocab
    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=TEXT_HIDDEN,
        bos_token_id=vocab[START_TOKEN],
        eos_token_id=vocab[END_TOKEN],
        pad_token_id=vocab[END_TOKEN],
    )


def text_encoder() -> CLIPTextModel:
    seeded(1)
    model = CLIPTextModel(text_config())
    model.train(False)
    return model


def text_encoder_with_projection() -> CLIPTextModelWithProjection:
    seeded(2)
    model = CLIPTextModelWithProjection(text_config())
    model.train(False)
    return model


def vae(scaling_factor: float = 0.18215, seed_offset: int = 3) -> Any:
    """Four blocks: latents are 1/8 of the image, as in Stable Diffusion. Another
    `seed_offset` gives another VAE of the same layout (a VAE override)."""
    seeded(seed_offset)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        norm_num_groups=8,
        layers_per_block=1,
        latent_channels=4,
        sample_size=64,
        scaling_factor=scaling_factor,
    ).eval()


def sd15_unet() -> Any:
    seeded(4)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
    ).eval()


def sdxl_unet() -> Any:
    """Cross-attends to both text encoders (concatenated) and takes SDXL's size and
    crop conditioning (six time ids) plus the pooled text embedding."""
    seeded(5)
    time_embed_dim = 8
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_HIDDEN,
        cross_attention_dim=2 * TEXT_HIDDEN,
    ).eval()


def sd15_scheduler() -> Any:
    """Stable Diffusion 1.5's default scheduler."""
    return PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False)


def sdxl_scheduler() -> Any:
    """Stable Diffusion XL's default scheduler."""
    return EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading")


def save_pipeline(pipeline: Any, folder: Path) -> None:
    """Saves as safetensors, with each tokenizer as the files `write_tokenizer` makes."""
    pipeline.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
            write_tokenizer(folder / name)
