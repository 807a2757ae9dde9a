"""The tiny face restorer: a RestoreFormer that spandrel loads.

Spandrel builds GFPGAN only at its released size (512 pixels, 512 style features), so
the tiny restorer is a RestoreFormer, whose sizes spandrel reads from the weights. It is
random: it shows that loading and running work, not what restoration looks like.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from spandrel.architectures.RestoreFormer import RestoreFormer

from hack.models import components
from hack.models.catalog import RESTORER_FILE


def restoreformer() -> torch.nn.Module:
    """32 channels (RestoreFormer's group norms take 32 groups), a codebook of 64 entries,
    and six levels as the released model has: its attention then runs at 16x16 on the
    512-pixel face input (with fewer levels, at 256x256: over 100 GB)."""
    components.seeded(50)
    model: torch.nn.Module = RestoreFormer(
        n_embed=64,
        embed_dim=32,
        ch=32,
        ch_mult=(1, 1, 1, 1, 1, 1),
        num_res_blocks=1,
        z_channels=32,
    )
    return model.eval()


def build_restoreformer(out: Path) -> None:
    """tiny-restoreformer: one .safetensors file of RestoreFormer's state dict."""
    state = {name: tensor.contiguous() for name, tensor in restoreformer().state_dict().items()}
    save_file(state, out / RESTORER_FILE)
