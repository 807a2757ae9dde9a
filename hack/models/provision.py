"""Builds what is missing and registers it: what `make models` and the tests call."""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffleet_core import SYSTEM_NAMESPACE
from hack.models.cache import built
from hack.models.catalog import DEFAULT, MICRO_SHAPES, ModelDefinition, definition
from hack.models.registry import RegisteredModel, register


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    built_now: bool
    seconds: float


def local_model(name: str) -> LocalModel:
    """The model's artifact on this machine, built into the cache when missing."""
    model = definition(name)
    started = time.monotonic()
    if model.build is None:
        if not MICRO_SHAPES.is_dir():
            raise FileNotFoundError(
                f"{MICRO_SHAPES} is missing: `python -m hack.models train` makes it"
            )
        return LocalModel(name, MICRO_SHAPES, False, 0.0)
    folder, built_now = built(name, model.build)
    path = folder if model.artifact == "." else folder / model.artifact
    return LocalModel(name, path, built_now, time.monotonic() - started)


def key_prefix(name: str, namespace: str) -> str:
    """system/<name> for the shared models, tests/<namespace>/<name> for others."""
    if namespace == SYSTEM_NAMESPACE:
        return f"system/{name}"
    return f"tests/{namespace}/{name}"


def spec_fields(model: ModelDefinition) -> dict[str, Any]:
    """The ModelCache spec's fields that the catalog gives (baseModel only for the types
    that have a family, imageEncoder only for ip-adapters, controlType only for
    ControlNets, T2I-Adapters and detectors)."""
    fields: dict[str, Any] = {"type": model.type, "vramGiB": model.vram_gib}
    if model.base_model is not None:
        fields["baseModel"] = model.base_model
    if model.image_encoder is not None:
        fields["imageEncoder"] = model.image_encoder
    if model.control_type is not None:
        fields["controlType"] = model.control_type
    return fields


def register_model(
    model: ModelDefinition, path: Path, namespace: str = SYSTEM_NAMESPACE
) -> RegisteredModel:
    return register(
        model.name,
        path,
        namespace=namespace,
        prefix=key_prefix(model.name, namespace),
        model_format=model.format,
        **spec_fields(model),
    )


def ensure_models(
    names: Iterable[str] = DEFAULT, namespace: str = SYSTEM_NAMESPACE
) -> dict[str, RegisteredModel]:
    """Builds the missing models and registers all of them in `namespace`; fast (seconds)
    when everything is built and uploaded already."""
    return {
        name: register_model(definition(name), local_model(name).path, namespace) for name in names
    }
