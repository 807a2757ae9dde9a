"""The tiny models of `make models` (hack/models) loaded in the test's process, as the
worker loads them."""

from typing import Any

from diffleet_core.messages import ModelRef
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_worker.loading import Loader
from hack.models.provision import local_model


def load_tiny(
    loader: Loader, name: str, kind: ModelType, family: BaseModelFamily = BaseModelFamily.SD15
) -> Any:
    """The tiny model `name` (a diffusers folder built by `make models`) through `loader`."""
    ref = ModelRef(
        namespace="ns",
        name=name,
        source=f"s3://models/{name}/",
        format=ModelFormat.DIFFUSERS,
        type=kind,
        base_model=family,
        digest="0" * 64,
    )
    return loader.load(ref, local_model(name).path)
