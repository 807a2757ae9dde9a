"""The tiny IP-Adapter of tiny-sd15 and the tiny CLIP vision encoder it reads its
reference images with.

tiny-image-encoder is laid out as the released encoders are (a transformers
CLIPVisionModelWithProjection folder with its CLIPImageProcessor's
preprocessor_config.json). tiny-ip-adapter is one safetensors file in the released
IP-Adapter's key layout, which diffusers' load_ip_adapter reads: `image_proj.*`, the
projection of the encoder's image embedding into four extra tokens of the UNet's
cross-attention width, and `ip_adapter.<n>.to_k_ip/to_v_ip.weight`, the key and value
projections of those tokens, for each cross-attention layer (n counts every attention
layer from 0, self-attention included, as diffusers numbers them: cross-attention layers
are the odd ones). Weights are seeded random, large enough that an image prompt visibly
changes a picture.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from hack.models import components
from hack.models.catalog import IP_ADAPTER_FILE

IMAGE_SIZE = 32
# The encoder's image embedding width; unlike the UNet's cross-attention width (32),
# so that a mix-up of the two fails loudly.
PROJECTION_DIM = 16
# The plain IP-Adapter's extra tokens per image (diffusers infers 4 from proj.weight).
IMAGE_TOKENS = 4
SPREAD = 0.5


def encoder() -> CLIPVisionModelWithProjection:
    components.seeded(70)
    config = CLIPVisionConfig(
        hidden_size=components.TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        projection_dim=PROJECTION_DIM,
    )
    model = CLIPVisionModelWithProjection(config)
    model.train(False)
    return model


def build_image_encoder(out: Path) -> None:
    """tiny-image-encoder: model.safetensors, config.json, preprocessor_config.json."""
    encoder().save_pretrained(out, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    ).save_pretrained(out)


def adapter_weights() -> dict[str, torch.Tensor]:
    """The IP-Adapter's tensors for tiny-sd15's UNet, keyed as the released files are."""
    unet = components.sd15_unet()
    width = unet.config.cross_attention_dim
    components.seeded(71)
    tensors = {
        "image_proj.proj.weight": SPREAD * torch.randn(IMAGE_TOKENS * width, PROJECTION_DIM),
        "image_proj.proj.bias": torch.zeros(IMAGE_TOKENS * width),
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    for index, name in enumerate(unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        attention = unet.get_submodule(name.removesuffix(".processor"))
        for projection in ("to_k", "to_v"):
            shape = getattr(attention, projection).weight.shape
            tensors[f"ip_adapter.{index}.{projection}_ip.weight"] = SPREAD * torch.randn(shape)
    return tensors


def build_ip_adapter(out: Path) -> None:
    """tiny-ip-adapter: one safetensors file."""
    save_file(adapter_weights(), out / IP_ADAPTER_FILE)
