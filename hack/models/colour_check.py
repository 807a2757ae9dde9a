"""Scores micro-shapes: for each colour, how many seeds draw a picture of that colour."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hack.models.shapes import IMAGE_SIZE, dominant_colour
from hack.models.tokenizer import SHAPE_COLOURS, SHAPE_KINDS
from hack.models.untyped import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

STEPS = 20
GUIDANCE = 7.0


@dataclass(frozen=True)
class ColourScore:
    sampler: str
    colour: str
    hits: int
    seeds: int
    seen: tuple[str, ...]

    def line(self) -> str:
        return (
            f"{self.sampler:<12} {self.colour:<6} {self.hits}/{self.seeds}  {' '.join(self.seen)}"
        )


def samplers(pipeline: Any) -> dict[str, Any]:
    """euler_a (the platform's default sampler) and the scheduler shipped in the folder."""
    shipped = pipeline.scheduler
    return {
        "euler_a": EulerAncestralDiscreteScheduler.from_config(shipped.config),
        "shipped": shipped,
    }


def score(folder: Path, seeds: int = 10) -> list[ColourScore]:
    """Draws "a <colour> <shape>" for every colour and seed (shapes take turns), with each
    sampler of `samplers`, and counts the pictures whose dominant colour is the asked one."""
    pipeline = StableDiffusionPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    scores = []
    for sampler, scheduler in samplers(pipeline).items():
        pipeline.scheduler = scheduler
        for colour in SHAPE_COLOURS:
            seen = []
            for seed in range(seeds):
                prompt = f"a {colour} {SHAPE_KINDS[seed % len(SHAPE_KINDS)]}"
                image = pipeline(
                    prompt,
                    height=IMAGE_SIZE,
                    width=IMAGE_SIZE,
                    num_inference_steps=STEPS,
                    guidance_scale=GUIDANCE,
                    generator=torch.Generator().manual_seed(seed),
                ).images[0]
                seen.append(dominant_colour(image))
            hits = sum(found == colour for found in seen)
            scores.append(ColourScore(sampler, colour, hits, seeds, tuple(seen)))
    return scores
