"""A CodeFormer restorer (spandrel-extra-arches, the worker's `restorers-noncommercial`
extra, which the development environment installs) loads through the worker's loader and
restores an image as a restoreFaces step does. The model is built here: its autoencoder
has the released size whatever the weights say (hack/models/restorers.py), too large for
the catalog every stack builds, and one pass on its 512-pixel input takes 10-20 s of CPU."""

from pathlib import Path

import numpy as np

from diffleet_core.messages import ModelRef
from diffleet_core.resources.model_cache import ModelFormat, ModelType
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.device import DevicePolicy
from diffleet_worker.loading import Loader
from diffleet_worker.pipelines.restore import restore
from hack.models.restorers import build_codeformer
from tests.support.groups import DIFFUSERS
from tests.worker.conftest import circle

pytestmark = DIFFUSERS


def test_a_codeformer_restorer_loads_and_restores_at_the_images_size(tmp_path: Path) -> None:
    path = build_codeformer(tmp_path)
    ref = ModelRef(
        namespace="ns",
        name="tiny-codeformer",
        source="s3://models/tiny-codeformer.safetensors",
        format=ModelFormat.SAFETENSORS,
        type=ModelType.RESTORER,
        digest="0" * 64,
    )
    model = Loader(DevicePolicy.choose(DeviceKind.CPU, Precision.FLOAT32)).load(ref, path)
    assert (model.architecture.id, model.purpose, model.scale) == ("CodeFormer", "FaceSR", 1)

    image = circle((220, 30, 30))
    restored = restore(image, model, strength=0.8, seed=1)
    assert restored.size == image.size
    assert not np.array_equal(np.asarray(restored), np.asarray(image))
