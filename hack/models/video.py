"""The tiny seeded video models: a Stable Video Diffusion image-to-video pipeline
(tiny-svd) and an AnimateDiff motion adapter for tiny-sd15's UNet (tiny-motion).

Like tiny.py's, they draw noise, not pictures: they exist so that the img2vid and
txt2vid code paths, frame counts, encoding and determinism can be tested on CPU in
seconds. The shapes follow diffusers' own fast-test dummies; the VAE keeps Stable
Diffusion's 8x downscale, so that a 64x64 video denoises 8x8 latents.
"""

from pathlib import Path
from typing import Any

from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from hack.models import components
from hack.models.untyped import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    MotionAdapter,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)

SVD_HIDDEN = 32
# The pipeline resizes the init image to 224x224 for the image encoder, as the released
# one's; large patches keep the tiny encoder's sequence short (7x7).
SVD_IMAGE_SIZE = 224
SVD_PATCH_SIZE = 32
# AnimateDiff's motion modules attend over at most this many frames (the released
# adapters' value).
MOTION_MAX_FRAMES = 32


def svd_unet() -> Any:
    """Takes the noisy latents and the init image's latents (8 channels); conditioned on
    the image embedding and on fps, motion bucket and noise augmentation (3 x 32)."""
    components.seeded(80)
    return UNetSpatioTemporalConditionModel(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=SVD_HIDDEN,
        num_attention_heads=(4, 8),
        addition_time_embed_dim=SVD_HIDDEN,
        projection_class_embeddings_input_dim=3 * SVD_HIDDEN,
    ).eval()


def svd_vae() -> Any:
    """Four blocks (8x downscale); its decoder has temporal layers, as SVD's. Its group
    norms have 32 groups (not configurable), hence 32 channels a block."""
    components.seeded(81)
    return AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        sample_size=64,
    ).eval()


def svd_image_encoder() -> CLIPVisionModelWithProjection:
    components.seeded(82)
    model = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=SVD_HIDDEN,
            projection_dim=SVD_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=SVD_IMAGE_SIZE,
            intermediate_size=37,
            patch_size=SVD_PATCH_SIZE,
        )
    )
    model.train(False)
    return model


def svd_scheduler() -> Any:
    """SVD's released scheduler: EDM-style continuous sigmas, v-prediction."""
    return EulerDiscreteScheduler(
        **components.SD_SCHEDULE
        | {
            "prediction_type": "v_prediction",
            "interpolation_type": "linear",
            "sigma_max": 700.0,
            "sigma_min": 0.002,
            "timestep_spacing": "leading",
            "timestep_type": "continuous",
            "use_karras_sigmas": True,
        }
    )


def build_svd(out: Path) -> None:
    """tiny-svd: a StableVideoDiffusionPipeline diffusers folder."""
    pipeline = StableVideoDiffusionPipeline(
        vae=svd_vae(),
        image_encoder=svd_image_encoder(),
        unet=svd_unet(),
        scheduler=svd_scheduler(),
        feature_extractor=CLIPImageProcessor(
            crop_size=SVD_IMAGE_SIZE, size={"shortest_edge": SVD_IMAGE_SIZE}
        ),
    )
    pipeline.save_pretrained(out, safe_serialization=True)


def build_motion_adapter(out: Path) -> None:
    """tiny-motion: motion modules for every block of tiny-sd15's UNet (its channels
    and layers per block), as a MotionAdapter diffusers folder."""
    unet = components.sd15_unet().config
    components.seeded(83)
    adapter = MotionAdapter(
        block_out_channels=tuple(unet.block_out_channels),
        motion_layers_per_block=unet.layers_per_block,
        motion_num_attention_heads=4,
        motion_norm_num_groups=unet.norm_num_groups,
        motion_max_seq_length=MOTION_MAX_FRAMES,
    )
    adapter.save_pretrained(out, safe_serialization=True)
