"""micro-shapes: a micro Stable Diffusion 1.5-style model, trained here in minutes on CPU,
that draws "a red/green/blue circle/square/triangle" on white at 64x64.

These choices make a few CPU minutes enough:
- The latent space is fixed by construction rather than learnt: a latent pixel is the
  4x4 block of the picture under it in colour-opponent form (ink; red, green and blue
  against the other two), zero on white. So the VAE and the UNet train at the same time,
  in two processes of one thread each, and a colour is one sign pattern of the latent.
- The UNet hears the caption twice: by cross-attention (at 4x4, where it is cheap) and
  pooled into its timestep embedding (`addition_embed_type="text"`), which reaches every
  block; StableDiffusionPipeline runs such a UNet unchanged.
- v-prediction (the scheduler config says so; samplers built from it follow): at high
  noise the target is the picture itself, so the colour is learnt first, not last.
- The text encoder is frozen (random weights, our tokenizer), so the ten captions'
  embeddings are computed once; pictures are drawn on the fly from a seeded generator.

Training is seeded and runs a fixed number of steps on one thread per process, so a
rebuild gives the same weights on the same torch version and CPU kind.
"""

import json
import math
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from hack.models import components
from hack.models.shapes import IMAGE_SIZE, random_shape, render
from hack.models.tokenizer import SHAPE_COLOURS, SHAPE_KINDS, clip_tokenizer
from hack.models.untyped import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

DOWNSCALE = 4
LATENT_SIZE = IMAGE_SIZE // DOWNSCALE
# Rows: ink (1 - luminance), then red, green and blue each against the mean of the other two.
OPPONENT = torch.tensor(
    [[-1 / 3, -1 / 3, -1 / 3], [1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]]
)
INK_OFFSET = torch.tensor([1.0, 0.0, 0.0, 0.0])
ENCODER_LOGVAR = -8.0
CAPTIONS = tuple(f"a {colour} {kind}" for colour in SHAPE_COLOURS for kind in SHAPE_KINDS)


@dataclass(frozen=True)
class Plan:
    """What a training run does; `plan.json` in the output records it."""

    unet_steps: int = 1000
    vae_steps: int = 600
    unet_batch_size: int = 64
    vae_batch_size: int = 16
    unet_learning_rate: float = 2e-3
    vae_learning_rate: float = 2e-3
    caption_dropout: float = 0.1
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    decoder_noise: float = 0.1
    seed: int = 0


def micro_vae() -> Any:
    """Three blocks: latents are 1/4 of the picture (16x16 at 64x64)."""
    components.seeded(10)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        norm_num_groups=8,
        layers_per_block=1,
        latent_channels=4,
        sample_size=IMAGE_SIZE,
        scaling_factor=1.0,
        force_upcast=False,
        mid_block_add_attention=False,
    )


def micro_unet() -> Any:
    """Three levels (16, 8, 4), cross-attention at 4x4, the pooled caption added to the
    timestep embedding."""
    components.seeded(11)
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=components.TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )


def picture_batch(rng: np.random.Generator, size: int) -> tuple[torch.Tensor, list[str]]:
    """`size` random pictures as (size, 3, 64, 64) in [-1, 1], with their captions."""
    shapes = [random_shape(rng) for _ in range(size)]
    pixels = np.stack([render(shape) for shape in shapes]).astype(np.float32) / 127.5 - 1
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), [s.caption for s in shapes]


def target_latents(pictures: torch.Tensor) -> torch.Tensor:
    """The fixed latent of pictures in [-1, 1]: 4x4 means in colour-opponent form."""
    pooled = F.avg_pool2d((pictures + 1) / 2, DOWNSCALE)
    latents = torch.einsum("oc,bchw->bohw", OPPONENT, pooled)
    return 2 * (latents + INK_OFFSET.view(1, 4, 1, 1))


def cosine_rate(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@dataclass(frozen=True)
class Timing:
    wall_seconds: float
    cpu_seconds: float


def timing(wall_started: float, cpu_started: float) -> Timing:
    return Timing(time.monotonic() - wall_started, time.process_time() - cpu_started)


def train_vae(plan: Plan, out: Path) -> Timing:
    """Encoder to the fixed latents, decoder back to pictures."""
    torch.set_num_threads(1)
    started, cpu_started = time.monotonic(), time.process_time()
    rng = np.random.default_rng(plan.seed + 1)
    generator = torch.Generator().manual_seed(plan.seed + 1)
    vae = micro_vae().train()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=plan.vae_learning_rate, weight_decay=0.0)
    for step in range(plan.vae_steps):
        for group in optimiser.param_groups:
            group["lr"] = cosine_rate(step, plan.vae_steps, plan.vae_learning_rate)
        pictures, _ = picture_batch(rng, plan.vae_batch_size)
        latents = target_latents(pictures)
        moments = vae.quant_conv(vae.encoder(pictures))
        mean, logvar = moments.chunk(2, dim=1)
        noisy = latents + plan.decoder_noise * torch.randn(latents.shape, generator=generator)
        decoded = vae.decode(noisy).sample
        loss = (
            F.mse_loss(decoded, pictures)
            + F.mse_loss(mean, latents)
            + 0.01 * F.mse_loss(logvar, torch.full_like(logvar, ENCODER_LOGVAR))
        )
        optimiser.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimiser.step()
        if step % 250 == 0 or step == plan.vae_steps - 1:
            print(f"vae step {step} loss {loss.item():.4f}", flush=True)
    vae.eval().save_pretrained(out, safe_serialization=True)
    return timing(started, cpu_started)


def caption_embeddings() -> dict[str, torch.Tensor]:
    """The frozen text encoder's output for every caption and for "" (no caption)."""
    tokenizer = clip_tokenizer()
    encoder = components.text_encoder()
    texts = ["", *CAPTIONS]
    ids = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = encoder(ids).last_hidden_state
    return dict(zip(texts, hidden, strict=True))


def train_unet(plan: Plan, out: Path) -> Timing:
    """Denoising on the fixed latents with Stable Diffusion's noise schedule; captions are
    dropped `caption_dropout` of the time, for classifier-free guidance."""
    torch.set_num_threads(1)
    started, cpu_started = time.monotonic(), time.process_time()
    embeddings = caption_embeddings()
    rng = np.random.default_rng(plan.seed + 2)
    generator = torch.Generator().manual_seed(plan.seed + 2)
    noise_schedule = DDPMScheduler(**schedule(plan))
    unet = micro_unet().train()
    optimiser = torch.optim.AdamW(unet.parameters(), lr=plan.unet_learning_rate)
    for step in range(plan.unet_steps):
        for group in optimiser.param_groups:
            group["lr"] = cosine_rate(step, plan.unet_steps, plan.unet_learning_rate)
        pictures, captions = picture_batch(rng, plan.unet_batch_size)
        latents = target_latents(pictures)
        dropped = rng.random(plan.unet_batch_size) < plan.caption_dropout
        context = torch.stack(
            [
                embeddings["" if drop else caption]
                for caption, drop in zip(captions, dropped, strict=True)
            ]
        )
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(
            0,
            noise_schedule.config.num_train_timesteps,
            (plan.unet_batch_size,),
            generator=generator,
        )
        noisy = noise_schedule.add_noise(latents, noise, timesteps)
        if plan.prediction_type == "v_prediction":
            target = noise_schedule.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        loss = F.mse_loss(unet(noisy, timesteps, context).sample, target)
        optimiser.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimiser.step()
        if step % 250 == 0 or step == plan.unet_steps - 1:
            print(f"unet step {step} loss {loss.item():.4f}", flush=True)
    unet.eval().save_pretrained(out, safe_serialization=True)
    return timing(started, cpu_started)


def schedule(plan: Plan) -> dict[str, Any]:
    return components.SD_SCHEDULE | {"prediction_type": plan.prediction_type}


def scheduler(plan: Plan) -> Any:
    """The scheduler shipped in the folder. Jobs name their own sampler, built from this
    config: it says not to clip the predicted latents to [-1, 1] (DDIM's default), as
    Stable Diffusion's configs do, since these latents reach about 1.8."""
    return EulerDiscreteScheduler.from_config(
        schedule(plan)
        | {"timestep_spacing": "leading", "clip_sample": False, "set_alpha_to_one": False}
    )


@dataclass(frozen=True)
class TrainingReport:
    vae: Timing
    unet: Timing
    wall_seconds: float


def train(out: Path, plan: Plan = Plan()) -> TrainingReport:
    """Trains micro-shapes into the diffusers folder `out`: the VAE in a second process
    while this one trains the UNet."""
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="micro-shapes-") as scratch,
        ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool,
    ):
        work = Path(scratch)
        vae_job = pool.submit(train_vae, plan, work / "vae")
        unet_timing = train_unet(plan, work / "unet")
        report = TrainingReport(vae_job.result(), unet_timing, time.monotonic() - started)
        pipeline = StableDiffusionPipeline(
            vae=AutoencoderKL.from_pretrained(work / "vae"),
            text_encoder=components.text_encoder(),
            tokenizer=clip_tokenizer(),
            unet=UNet2DConditionModel.from_pretrained(work / "unet"),
            scheduler=scheduler(plan),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    shutil.rmtree(out, ignore_errors=True)
    components.save_pipeline(pipeline, out)
    (out / "plan.json").write_text(json.dumps(asdict(plan), indent=2, sort_keys=True) + "\n")
    return report
