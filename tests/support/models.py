"""The test models (hack/models) as tests use them: registered in the local stack, and
judged by the colour they draw."""

import io
from enum import StrEnum
from pathlib import Path

import torch

from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat
from hack.models.catalog import DEFAULT
from hack.models.provision import ensure_models as ensure_registered
from hack.models.registry import RegisteredModel, register
from hack.models.shapes import dominant_colour

__all__ = [
    "PickleLayout",
    "RegisteredModel",
    "dominant_colour",
    "ensure_models",
    "register_pickle_model",
]


def ensure_models(names: tuple[str, ...] = DEFAULT) -> dict[str, RegisteredModel]:
    """The default test models, built when missing and registered in diffleet-system
    (idempotent; seconds when cached). Needs the stack's environment (`local_stack`)."""
    return ensure_registered(names)


class PickleLayout(StrEnum):
    FILE = "file"  # one .ckpt file declared as format safetensors
    FOLDER = "folder"  # a diffusers folder whose UNet weights are a pickled .bin


def register_pickle_model(
    namespace: str, name: str, scratch: Path, layout: PickleLayout = PickleLayout.FILE
) -> RegisteredModel:
    """Uploads a pickle-format model (what torch.save writes) and applies a ModelCache for
    it in `namespace`; the operator must refuse it (UnsafeFormat), never load it."""
    weights = io.BytesIO()
    torch.save({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, weights)
    if layout is PickleLayout.FILE:
        path = scratch / f"{name}.ckpt"
        path.write_bytes(weights.getvalue())
        model_format = ModelFormat.SAFETENSORS
    else:
        path = scratch / name
        (path / "unet").mkdir(parents=True)
        (path / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}\n')
        (path / "unet" / "diffusion_pytorch_model.bin").write_bytes(weights.getvalue())
        model_format = ModelFormat.DIFFUSERS
    return register(
        name,
        path,
        namespace=namespace,
        prefix=f"tests/{namespace}/{name}",
        model_format=model_format,
        baseModel=BaseModelFamily.SD15,
        vramGiB=0.5,
    )
