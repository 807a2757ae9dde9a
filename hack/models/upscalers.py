"""The tiny upscalers: an ESRGAN that spandrel loads, and a Stable Diffusion x4 upscaler
pipeline.

The ESRGAN is near-identity: its convolutions pass the three colour channels through
(a centre tap of one) and add small random weights elsewhere, so that its x4 output is
close to a nearest-neighbour enlargement and tests can check colours and positions after
upscaling. The x4 upscaler pipeline draws noise, like the tiny Stable Diffusion models.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from spandrel.architectures.ESRGAN import ESRGAN

from hack.models import components
from hack.models.catalog import ESRGAN_FILE
from hack.models.tokenizer import clip_tokenizer
from hack.models.untyped import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionUpscalePipeline,
    UNet2DConditionModel,
)

ESRGAN_SCALE = 4
# Spread of the ESRGAN's random weights around the identity path: small enough that
# colours survive, large enough that the network is not an exact copy.
ESRGAN_SPREAD = 0.002
COLOURS = 3
# The x4 upscaler pipeline's noise on the low-resolution image (Stable Diffusion's).
MAX_NOISE_LEVEL = 350


def esrgan() -> torch.nn.Module:
    """RRDBNet (old-arch keys) with 8 filters and one block: about 0.9 MB."""
    model: torch.nn.Module = ESRGAN(num_filters=8, num_blocks=1, scale=ESRGAN_SCALE)
    generator = torch.Generator().manual_seed(components.SEED + 40)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * ESRGAN_SPREAD)
            # The main path's convolutions (model.1 is the residual trunk beside it).
            if name.endswith(".weight") and not name.startswith("model.1."):
                centre = parameter.shape[2] // 2
                for channel in range(COLOURS):
                    parameter[channel, channel, centre, centre] += 1.0
    return model.eval()


def build_esrgan(out: Path) -> None:
    """tiny-esrgan-x4: one .safetensors file of ESRGAN's state dict."""
    state = {name: tensor.contiguous() for name, tensor in esrgan().state_dict().items()}
    save_file(state, out / ESRGAN_FILE)


def upscaler_vae() -> object:
    """Three blocks: the decoder enlarges latents four times, as the x4 upscaler's does."""
    components.seeded(41)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        norm_num_groups=8,
        layers_per_block=1,
        latent_channels=4,
        sample_size=64,
        scaling_factor=0.08333,
    ).eval()


def upscaler_unet() -> object:
    """Takes the latents and the low-resolution image (4 + 3 channels) and the noise
    level of the image as a class label. Its latents are as large as the input image, so
    attention only at the lowest of three levels (a quarter of the input's side) keeps a
    step on a 64x64 input near 0.2 s of CPU instead of over 1 s."""
    components.seeded(42)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4 + COLOURS,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        norm_num_groups=8,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=components.TEXT_HIDDEN,
        attention_head_dim=8,
        num_class_embeds=MAX_NOISE_LEVEL + 1,
    ).eval()


def build_sd_x4_upscaler(out: Path) -> None:
    """tiny-sd-x4-upscaler: a StableDiffusionUpscalePipeline folder."""
    schedule = {
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
    }
    pipeline = StableDiffusionUpscalePipeline(
        vae=upscaler_vae(),
        text_encoder=components.text_encoder(),
        tokenizer=clip_tokenizer(),
        unet=upscaler_unet(),
        low_res_scheduler=DDPMScheduler(**schedule),
        scheduler=DDIMScheduler(
            **schedule,
            prediction_type="v_prediction",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        max_noise_level=MAX_NOISE_LEVEL,
    )
    components.save_pipeline(pipeline, out)
