"""bench-sd15: a small but not tiny random Stable Diffusion 1.5 pipeline for the worker
benchmark. Its UNet has SD 1.5's layout with a quarter-and-a-bit of the width
(96/192/384/384 channels, one layer per block): about 53M parameters, so a CPU spends a
realistic share of its time in convolutions and attention rather than in Python."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hack.models import components
from hack.models.tokenizer import clip_tokenizer
from hack.models.untyped import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

BENCH_SIZE = 128
BENCH_STEPS = 20


def unet() -> Any:
    components.seeded(40)
    return UNet2DConditionModel(
        sample_size=BENCH_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(96, 192, 384, 384),
        layers_per_block=1,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        cross_attention_dim=components.TEXT_HIDDEN,
        attention_head_dim=8,
    ).eval()


def vae() -> Any:
    components.seeded(41)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        sample_size=BENCH_SIZE,
    ).eval()


def pipeline() -> Any:
    return StableDiffusionPipeline(
        vae=vae(),
        text_encoder=components.text_encoder(),
        tokenizer=clip_tokenizer(),
        unet=unet(),
        scheduler=components.sd15_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build(out: Path) -> None:
    components.save_pipeline(pipeline(), out)


@dataclass(frozen=True)
class BenchFigures:
    parameters: int
    seconds_per_image: float
    images: int
    threads: int


def measure(folder: Path, images: int = 3) -> BenchFigures:
    """Seconds per 128x128 image at 20 steps (guidance 7.5, the default), after one
    warm-up image."""
    loaded = StableDiffusionPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    parameters = sum(
        parameter.numel()
        for model in (loaded.unet, loaded.vae, loaded.text_encoder)
        for parameter in model.parameters()
    )

    def draw(seed: int) -> None:
        loaded(
            "a red circle",
            height=BENCH_SIZE,
            width=BENCH_SIZE,
            num_inference_steps=BENCH_STEPS,
            generator=torch.Generator().manual_seed(seed),
        )

    draw(0)
    started = time.perf_counter()
    for seed in range(images):
        draw(seed)
    seconds = (time.perf_counter() - started) / images
    return BenchFigures(parameters, seconds, images, torch.get_num_threads())
