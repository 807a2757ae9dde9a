"""Cheap previews of a run in progress: latents mapped to RGB by a fixed linear projection
(the approximation image UIs use), at latent resolution, with no VAE decode."""

import base64
import io

import torch
from PIL import Image

from diffleet_core.resources.model_cache import BaseModelFamily

# Per family: a 4x3 projection from the VAE's latent channels to RGB, and an RGB bias.
SD15_LATENT_RGB = (
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    [0.0, 0.0, 0.0],
)
LATENT_RGB: dict[BaseModelFamily, tuple[list[list[float]], list[float]]] = {
    BaseModelFamily.SD15: SD15_LATENT_RGB,
    # SVD's VAE encodes into Stable Diffusion 1.5's latent space.
    BaseModelFamily.SVD: SD15_LATENT_RGB,
    BaseModelFamily.SDXL: (
        [
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        [0.1084, -0.0175, -0.0011],
    ),
}


def preview_png(latents: torch.Tensor, family: BaseModelFamily) -> bytes:
    """PNG of the first image of a batch of latents (B, C, H, W)."""
    first = latents[0].detach().to(device="cpu", dtype=torch.float32)
    if first.shape[0] == 4:
        weights, bias = LATENT_RGB[family]
        rgb = torch.einsum("chw,cr->hwr", first, torch.tensor(weights)) + torch.tensor(bias)
    else:
        rgb = first.mean(dim=0, keepdim=True).expand(3, -1, -1).permute(1, 2, 0)
    pixels = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).mul(255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def preview_base64(latents: torch.Tensor, family: BaseModelFamily) -> str:
    return base64.b64encode(preview_png(latents, family)).decode()
