"""LoRA stacking for one job: load each LoRA as a named adapter, activate them with their
weights, and leave the base pipeline clean afterwards (adapters deleted), so the next job
on this hot pipeline runs the base model exactly."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LoadedLora:
    adapter: str
    path: Path
    weight: float


def adapter_name(index: int) -> str:
    return f"lora{index}"


@contextmanager
def applied(pipe: Any, loras: list[LoadedLora]) -> Iterator[None]:
    if not loras:
        yield
        return
    try:
        for lora in loras:
            pipe.load_lora_weights(
                str(lora.path.parent), weight_name=lora.path.name, adapter_name=lora.adapter
            )
        pipe.set_adapters(
            [lora.adapter for lora in loras], adapter_weights=[lora.weight for lora in loras]
        )
        yield
    finally:
        pipe.unload_lora_weights()
