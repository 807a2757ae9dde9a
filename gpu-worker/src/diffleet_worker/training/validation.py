"""Validation images: the validation prompts rendered with the adapters as they are
(the pipeline holds the UNet being trained), seeded, so two checkpoints of a training
show the same pictures changing."""

import io
from typing import Any

import torch

VALIDATION_STEPS = 20


def render(pipe: Any, prompts: list[str], seed: int, resolution: int) -> list[bytes]:
    """One PNG per prompt, each from a generator seeded with `seed`."""
    with torch.no_grad():
        return [png(pipe, prompt, seed, resolution) for prompt in prompts]


def png(pipe: Any, prompt: str, seed: int, resolution: int) -> bytes:
    image = pipe(
        prompt,
        height=resolution,
        width=resolution,
        num_inference_steps=VALIDATION_STEPS,
        generator=torch.Generator(pipe.device).manual_seed(seed),
    ).images[0]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
