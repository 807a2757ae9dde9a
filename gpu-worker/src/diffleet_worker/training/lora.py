"""The LoRA adapters being trained: where they go, which parameters train, and the
state dict the result is written from.

As in diffusers' train_text_to_image_lora.py: the base weights are frozen, peft puts a
LoRA on the UNet's attention projections (and, when asked, the text encoder's), with
alpha = rank (scale 1), which is what `load_lora_weights` assumes for a file that names
no alpha.
"""

from typing import Any

import torch
from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def trained_modules(pipe: Any, train_text_encoder: bool) -> dict[str, torch.nn.Module]:
    """The modules that carry adapters, by their prefix in the LoRA file."""
    modules = {"unet": pipe.unet}
    if train_text_encoder:
        modules["text_encoder"] = pipe.text_encoder
    return modules


def add_adapters(pipe: Any, rank: int, train_text_encoder: bool, seed: int) -> None:
    """Puts fresh adapters on the frozen pipeline. peft draws their initial weights
    from torch's global generator: seeded here, so a seed gives one start."""
    torch.manual_seed(seed)
    pipe.unet.add_adapter(config(rank, UNET_TARGETS))
    if train_text_encoder:
        pipe.text_encoder.add_adapter(config(rank, TEXT_ENCODER_TARGETS))


def config(rank: int, targets: list[str]) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)


def trainable_parameters(modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    """The adapters' parameters by "<module>/<parameter name>", in name order (the
    optimizer's order, and a checkpoint's keys)."""
    found = {
        f"{prefix}/{name}": parameter
        for prefix, module in modules.items()
        for name, parameter in module.named_parameters()
        if parameter.requires_grad
    }
    return dict(sorted(found.items()))


def lora_state_dict(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The adapters in the diffusers LoRA format ("unet.…lora.down.weight"), which
    `pipe.load_lora_weights` reads."""
    state: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        converted = convert_state_dict_to_diffusers(  # type: ignore[no-untyped-call]
            get_peft_model_state_dict(module)
        )
        state |= {
            f"{prefix}.{key}": value.detach().contiguous() for key, value in converted.items()
        }
    return dict(sorted(state.items()))
