"""The tiny face restorers: a RestoreFormer that spandrel loads, and a CodeFormer that it
loads with spandrel-extra-arches.

Spandrel builds GFPGAN only at its released size (512 pixels, 512 style features), so
the tiny restorer is a RestoreFormer, whose sizes spandrel reads from the weights. Both are
random: they show that loading and running work, not what restoration looks like.
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


def codeformer() -> torch.nn.Module:
    """spandrel-extra-arches reads only the transformer's sizes from the weights: its
    autoencoder is always the released one (64 to 512 channels over six levels, 512-pixel
    input), so this CodeFormer is small only in its transformer and codebook and still
    holds 68 M parameters (270 MB). It is not in the catalog, which every stack builds: the
    test that loads it builds it (tests/worker/unit/test_codeformer.py). Imported here: the
    package is in the development environment only, and warns at import."""
    from spandrel_extra_arches.architectures.CodeFormer import (  # type: ignore[import-untyped]
        CodeFormer,
    )

    components.seeded(51)
    model: torch.nn.Module = CodeFormer(
        dim_embd=32, n_head=8, n_layers=1, codebook_size=64, connect_list=["32"]
    )
    return model.eval()


def build_codeformer(out: Path) -> Path:
    """A CodeFormer's state dict as one .safetensors file in `out`; its path."""
    path = out / "tiny-codeformer.safetensors"
    state = {name: tensor.contiguous() for name, tensor in codeformer().state_dict().items()}
    save_file(state, path)
    return path
