"""Writes a diffusers Stable Diffusion 1.5 folder as one original-layout (LDM) checkpoint.

The key names are the inverse of what diffusers' single-file loader maps
(`diffusers.loaders.single_file_utils`): the UNet under `model.diffusion_model.`, the VAE
under `first_stage_model.`, the CLIP text model under `cond_stage_model.transformer.`.
`StableDiffusionPipeline.from_single_file(path, config=<the folder>)` loads the result.
"""

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders import single_file_utils
from safetensors.torch import load_file, save_file

# diffusers key -> LDM key of the layers outside the numbered blocks (typed object there).
LDM_NAMES: Any = single_file_utils.DIFFUSERS_TO_LDM_MAPPING
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

UNET_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION_NAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}

Renamer = Callable[[re.Match[str]], str]


def rename(key: str, rules: list[tuple[str, Renamer]], what: str) -> str:
    for pattern, replace in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return replace(match)
    raise ValueError(f"{what} key {key!r} has no original-layout name")


def unet_resnet(rest: str) -> str:
    layer, _, tail = rest.partition(".")
    return f"{UNET_RESNET_NAMES[layer]}.{tail}"


def unet_key_map(config: dict[str, Any]) -> list[tuple[str, Renamer]]:
    """Rules from diffusers UNet keys to LDM keys: input/middle/output blocks, numbered
    as the single-file loader numbers them for `layers_per_block`."""
    span = config["layers_per_block"] + 1
    attention_in_up = [name.startswith("CrossAttn") for name in config["up_block_types"]]
    fixed: dict[str, str] = dict(LDM_NAMES["unet"]["layers"])
    if config.get("addition_embed_type") == "text_time":
        fixed |= LDM_NAMES["unet"]["addition_embed_type"]

    def down(match: re.Match[str]) -> str:
        block, layer = int(match[1]), int(match[3])
        index = 1 + block * span + layer
        if match[2] == "resnets":
            return f"input_blocks.{index}.0.{unet_resnet(match[4])}"
        return f"input_blocks.{index}.1.{match[4]}"

    def up(match: re.Match[str]) -> str:
        block, layer = int(match[1]), int(match[3])
        index = block * span + layer
        if match[2] == "resnets":
            return f"output_blocks.{index}.0.{unet_resnet(match[4])}"
        return f"output_blocks.{index}.1.{match[4]}"

    def upsampler(match: re.Match[str]) -> str:
        block = int(match[1])
        position = 2 if attention_in_up[block] else 1
        return f"output_blocks.{block * span + span - 1}.{position}.conv.{match[2]}"

    middle = {"resnets.0": "0", "attentions.0": "1", "resnets.1": "2"}

    def mid(match: re.Match[str]) -> str:
        tail = unet_resnet(match[2]) if match[1].startswith("resnets") else match[2]
        return f"middle_block.{middle[match[1]]}.{tail}"

    return [(re.escape(key), lambda _match, ldm=ldm: ldm) for key, ldm in fixed.items()] + [
        (r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", down),
        (
            r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)",
            lambda m: f"input_blocks.{1 + int(m[1]) * span + span - 1}.0.op.{m[2]}",
        ),
        (r"mid_block\.(resnets\.\d+|attentions\.0)\.(.+)", mid),
        (r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", up),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", upsampler),
    ]


def vae_key_map(config: dict[str, Any]) -> list[tuple[str, Renamer]]:
    """Rules from diffusers AutoencoderKL keys to LDM keys (decoder blocks run in reverse)."""
    last = len(config["up_block_types"]) - 1
    fixed: dict[str, str] = dict(LDM_NAMES["vae"])

    def resnet(tail: str) -> str:
        return tail.replace("conv_shortcut", "nin_shortcut")

    def attention(match: re.Match[str]) -> str:
        return f"{match[1]}.mid.attn_1.{VAE_ATTENTION_NAMES[match[2]]}.{match[3]}"

    return [(re.escape(key), lambda _match, ldm=ldm: ldm) for key, ldm in fixed.items()] + [
        (
            r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
            lambda m: f"encoder.down.{m[1]}.block.{m[2]}.{resnet(m[3])}",
        ),
        (
            r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
            lambda m: f"encoder.down.{m[1]}.downsample.conv.{m[2]}",
        ),
        (
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
            lambda m: f"decoder.up.{last - int(m[1])}.block.{m[2]}.{resnet(m[3])}",
        ),
        (
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)",
            lambda m: f"decoder.up.{last - int(m[1])}.upsample.conv.{m[2]}",
        ),
        (
            r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)",
            lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.{resnet(m[3])}",
        ),
        (
            r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.+)",
            attention,
        ),
    ]


def vae_tensor(ldm_key: str, tensor: torch.Tensor) -> torch.Tensor:
    """The original VAE's attention projections are 1x1 convolutions."""
    if ".mid.attn_1." in ldm_key and tensor.ndim == 2:
        return tensor[:, :, None, None]
    return tensor


def read_config(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def to_ldm(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's UNet, VAE and text encoder as one original-layout state dict."""
    checkpoint: dict[str, torch.Tensor] = {}
    unet_rules = unet_key_map(read_config(folder / "unet" / "config.json"))
    for key, tensor in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        checkpoint[UNET_PREFIX + rename(key, unet_rules, "UNet")] = tensor
    vae_rules = vae_key_map(read_config(folder / "vae" / "config.json"))
    for key, tensor in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        ldm_key = rename(key, vae_rules, "VAE")
        checkpoint[VAE_PREFIX + ldm_key] = vae_tensor(ldm_key, tensor)
    for key, tensor in load_file(folder / "text_encoder" / "model.safetensors").items():
        checkpoint[CLIP_PREFIX + key.removeprefix("text_model.")] = tensor
    return checkpoint


def write_single_file(folder: Path, path: Path) -> None:
    """Writes `folder` (a Stable Diffusion 1.5 diffusers folder) as one .safetensors file."""
    tensors = {key: tensor.contiguous() for key, tensor in sorted(to_ldm(folder).items())}
    save_file(tensors, path, metadata={"format": "pt"})
