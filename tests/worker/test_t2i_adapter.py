"""T2I-Adapters through the whole platform (kubectl, operator, RabbitMQ, a real diffusers
worker on the CPU, S3) with tiny-sd15 and tiny-canny-adapter: each adapter receives its
own conditioning (canny edges made by the worker, or the map sent with preprocess none),
the adapter changes the picture, the same seed gives the same file, and each entry's
parameters are read back from it."""

from typing import Any

from PIL import Image

from diffleet_worker.controls import image_digest
from diffleet_worker.images import canny_edges
from tests.support.groups import DIFFUSERS
from tests.support.platform import Process
from tests.support.stack import Kubectl
from tests.worker.conftest import circle, parameters_of, run_jobs, upload_image

pytestmark = DIFFUSERS

TINY = {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 4, "seed": 1}
RED = (220, 30, 30)


def digest_of(status: dict[str, Any]) -> str:
    sha256: str = status["outputs"][0]["sha256"]
    return sha256


def test_t2i_adapters_each_receive_their_conditioning_and_draw_the_same_for_a_seed(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    image = circle(RED)
    sent_map = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    uri, sent_uri = upload_image(image, "adapter"), upload_image(sent_map, "adapter-map")
    plain = TINY | {"prompt": "a red circle"}
    canny = {"model": "tiny-canny-adapter", "image": uri, "conditioningScale": 0.9}
    one = plain | {"controlNets": [canny]}
    sent = {"model": "tiny-canny-adapter", "image": sent_uri, "preprocess": "none"}
    two = plain | {"controlNets": [canny, sent | {"conditioningScale": 0.5}]}
    done = run_jobs(
        kubectl,
        studio_namespace,
        {"plain": plain, "adapter": one, "adapter-again": one, "two-adapters": two},
    )
    # What each adapter received, as the worker logs it: the canny edges of the image it
    # fetched, and the sent map unchanged.
    log = studio.log.read_text(errors="replace")
    for field, module, digest in (
        ("controlNets[0]", "canny", image_digest(canny_edges(image))),
        ("controlNets[1]", "none", image_digest(sent_map)),
    ):
        line = f"{field}: canny conditioning by preprocessor {module}, 64x64, sha256 {digest}"
        assert line in log
    digests = {name: digest_of(status) for name, status in done.items()}
    assert digests["adapter"] == digests["adapter-again"]
    assert len({digests["plain"], digests["adapter"], digests["two-adapters"]}) == 3
    assert (
        'ControlNet 0: "Module: canny, Model: tiny-canny-adapter, Weight: 0.9, Guidance Start:'
        ' 0, Guidance End: 1"'
    ) in parameters_of(done["adapter"])
    parameters = parameters_of(done["two-adapters"])
    assert 'ControlNet 0: "Module: canny, Model: tiny-canny-adapter, Weight: 0.9' in parameters
    assert 'ControlNet 1: "Module: none, Model: tiny-canny-adapter, Weight: 0.5' in parameters
