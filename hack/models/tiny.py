"""The tiny seeded models: Stable Diffusion 1.5 and XL pipelines, and for tiny-sd15 a
LoRA, a textual-inversion embedding and a VAE (its ControlNets: controls.py).

They draw noise, not pictures: they exist so that loading, LoRA and ControlNet code paths,
sizes and digests can be tested on CPU in well under a second per image. Each builder
writes into an empty folder and gives the same bytes on every run (same torch version).
"""

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from hack.models import components
from hack.models.catalog import EMBEDDING_FILE, LORA_FILE, SINGLE_FILE
from hack.models.single_file import write_single_file
from hack.models.tokenizer import clip_tokenizer
from hack.models.untyped import StableDiffusionPipeline, StableDiffusionXLPipeline

LORA_RANK = 4
# Spread of the LoRA's B matrices (peft starts them at zero, a no-op): large enough that
# it visibly changes a picture.
LORA_SPREAD = 2.0
EMBEDDING_VECTORS = 2


def sd15_pipeline() -> Any:
    return StableDiffusionPipeline(
        vae=components.vae(),
        text_encoder=components.text_encoder(),
        tokenizer=clip_tokenizer(),
        unet=components.sd15_unet(),
        scheduler=components.sd15_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sd15(out: Path) -> None:
    """tiny-sd15: a diffusers folder."""
    components.save_pipeline(sd15_pipeline(), out)


def build_sd15_single_file(out: Path) -> None:
    """tiny-sd15 as one original-layout checkpoint, `tiny-sd15.safetensors`."""
    folder = out / "diffusers"
    build_sd15(folder)
    write_single_file(folder, out / SINGLE_FILE)


def build_sdxl(out: Path) -> None:
    """tiny-sdxl: two text encoders (the second with a projection) and a UNet with SDXL's
    size-and-crop conditioning."""
    pipeline = StableDiffusionXLPipeline(
        vae=components.vae(scaling_factor=0.13025),
        text_encoder=components.text_encoder(),
        text_encoder_2=components.text_encoder_with_projection(),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=components.sdxl_unet(),
        scheduler=components.sdxl_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    components.save_pipeline(pipeline, out)


def build_lora(out: Path) -> None:
    """tiny-lora: rank-4 LoRA on every attention projection of tiny-sd15's UNet, with
    random (not zero) B matrices, as one .safetensors file."""
    unet = components.sd15_unet()
    unet.add_adapter(
        LoraConfig(
            r=LORA_RANK,
            lora_alpha=LORA_RANK,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    generator = torch.Generator().manual_seed(components.SEED + 20)
    with torch.no_grad():
        for name, parameter in sorted(unet.named_parameters()):
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * LORA_SPREAD)
    StableDiffusionPipeline.save_lora_weights(
        save_directory=out,
        unet_lora_layers=get_peft_model_state_dict(unet),
        weight_name=LORA_FILE,
        safe_serialization=True,
    )


def build_embedding(out: Path) -> None:
    """tiny-embedding: two token vectors for tiny-sd15's text encoder, spread like its
    own token embeddings, as one .safetensors file with the single key `emb_params` (the
    layout of A1111's embeddings, which diffusers' load_textual_inversion reads)."""
    table = components.text_encoder().get_input_embeddings()
    assert isinstance(table, torch.nn.Embedding)
    token_embeddings = table.weight.detach()
    generator = torch.Generator().manual_seed(components.SEED + 70)
    vectors = torch.randn(
        (EMBEDDING_VECTORS, token_embeddings.shape[1]), generator=generator
    ) * float(token_embeddings.std())
    save_file({"emb_params": vectors.contiguous()}, out / EMBEDDING_FILE)


def build_vae(out: Path) -> None:
    """tiny-vae: an AutoencoderKL folder of tiny-sd15's VAE layout with other random
    weights, so that decoding the same latents gives another picture."""
    components.vae(seed_offset=71).save_pretrained(out, safe_serialization=True)
