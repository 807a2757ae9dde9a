"""A training's state at a step boundary, as one safetensors file: the adapters'
parameters, AdamW's moments and step count for each, and the step in the metadata.

That is the whole state: every random draw of a step derives from (seed, step)
(batches.py), so a training resumed from a checkpoint ends with the same bytes as one
that never stopped. safetensors, not torch.save: a checkpoint is data read back from
S3, and pickles run code on load.
"""

import json
from dataclasses import dataclass

import torch
from safetensors.torch import load, save

STEP = "step"
# AdamW's per-parameter state, as torch.optim.AdamW keeps it.
MOMENTS = ("exp_avg", "exp_avg_sq", "step")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    parameters: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]  # "<moment>:<parameter>"


def capture(
    step: int, parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
) -> Checkpoint:
    """The state after `step` steps (no optimizer state before the first step)."""
    moments = {
        f"{moment}:{name}": value.detach().clone()
        for name, parameter in parameters.items()
        for moment, value in optimizer.state.get(parameter, {}).items()
        if moment in MOMENTS
    }
    weights = {name: parameter.detach().clone() for name, parameter in parameters.items()}
    return Checkpoint(step=step, parameters=weights, optimizer=moments)


def restore(
    checkpoint: Checkpoint,
    parameters: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
) -> None:
    """Puts a checkpoint's state into the adapters and the optimizer; raises ValueError
    when it holds other parameters than these (another rank or target)."""
    if checkpoint.parameters.keys() != parameters.keys():
        raise ValueError("the checkpoint's LoRA parameters are not this training's")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(checkpoint.parameters[name])
    for key, value in checkpoint.optimizer.items():
        moment, _, name = key.partition(":")
        optimizer.state[parameters[name]][moment] = value.clone()


def encode(checkpoint: Checkpoint) -> bytes:
    tensors = {f"parameter:{name}": value for name, value in checkpoint.parameters.items()}
    tensors |= {f"optimizer:{key}": value for key, value in checkpoint.optimizer.items()}
    return save(tensors, metadata={STEP: str(checkpoint.step)})


def decode(data: bytes) -> Checkpoint:
    tensors = load(data)
    return Checkpoint(
        step=metadata_step(data),
        parameters=with_prefix(tensors, "parameter:"),
        optimizer=with_prefix(tensors, "optimizer:"),
    )


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)
    }


def metadata_step(data: bytes) -> int:
    """The step in the file's metadata (a safetensors header: 8 bytes of length, then
    JSON; safetensors' `load` of bytes returns the tensors only)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    return int(header["__metadata__"][STEP])
