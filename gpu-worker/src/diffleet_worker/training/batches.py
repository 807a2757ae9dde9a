"""The examples as tensors, and which of them each step trains on.

Every random draw of a step (the order of the examples, the latent sample, the noise,
the timesteps) comes from the seed and the step number alone, not from a generator
carried along: a training resumed at step k draws what an uninterrupted one would, so
a checkpoint needs no RNG state beyond its step.
"""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from diffleet_worker.training.dataset import Example


def pixels(examples: Sequence[Example], resolution: int) -> torch.Tensor:
    """The images as (n, 3, resolution, resolution) in [-1, 1]: scaled so the shorter
    side is `resolution`, then cropped in the middle (a crop that moves with the step
    would be one more draw to replay, for little gain on small datasets)."""
    arrays = [
        np.asarray(
            ImageOps.fit(
                example.image.convert("RGB"), (resolution, resolution), Image.Resampling.LANCZOS
            ),
            dtype=np.float32,
        )
        for example in examples
    ]
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return stacked / 127.5 - 1


def indices(seed: int, step: int, batch_size: int, count: int) -> list[int]:
    """The examples of step `step` (counted from 0): the batch_size positions after the
    previous steps' in a sequence of epochs, each a permutation seeded by (seed, epoch)."""
    picked = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, count)
        picked.append(int(epoch_order(seed, epoch, count)[offset]))
    return picked


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(count)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of a step's latent sample, noise and timesteps."""
    mixed = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))
