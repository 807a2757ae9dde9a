"""Output files through the whole platform (the studio's operator and real diffusers
worker on the CPU, S3): a job's output format gives the object's key, type and bytes,
the parameters read back from the file, the same bytes for the same seed, and a
namespace annotated diffleet.io/watermark: "true" gets watermarked images. (The output
classifier's verdict end to end is in tests/operator/test_moderation.py.)"""

import io

import boto3
from PIL import Image

from diffleet_core.policy import WATERMARK_ANNOTATION
from diffleet_core.storage import S3Location
from diffleet_worker import watermark
from diffleet_worker.encoding import read_parameters
from tests.support.groups import DIFFUSERS
from tests.support.platform import Process
from tests.support.stack import Kubectl
from tests.worker.conftest import run_jobs
from tests.worker.unit.test_watermark import MAX_FLIPPED, flipped

pytestmark = DIFFUSERS


def stored(uri: str) -> tuple[bytes, str]:
    """An output's bytes and content type in S3."""
    location = S3Location.parse(uri)
    found = boto3.client("s3").get_object(Bucket=location.bucket, Key=location.key)
    return found["Body"].read(), found["ContentType"]


def test_webp_and_jpeg_outputs_keep_their_parameters_and_the_namespace_watermark(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    # Before the namespace's first job: the operator reads its annotations then.
    namespace = studio_namespace
    kubectl.run("annotate", "namespace", namespace, f"{WATERMARK_ANNOTATION}=true")

    # WebP at quality 100 is lossless, so the watermark's bits survive in the file.
    webp_spec = {
        "model": "tiny-sd15", "width": 256, "height": 256, "steps": 4, "seed": 5,
        "output": {"format": "webp", "quality": 100},
    }  # fmt: skip
    jpeg_spec = {
        "model": "tiny-sd15", "width": 64, "height": 96, "steps": 2, "seed": 6,
        "prompt": "un cercle rouge \u2764", "output": {"format": "jpeg", "quality": 80},
    }  # fmt: skip
    done = run_jobs(
        kubectl,
        namespace,
        {"webp": webp_spec, "webp-again": webp_spec, "jpeg": jpeg_spec, "jpeg-again": jpeg_spec},
    )
    # The same seed stores the same bytes, encoded and watermarked.
    for name in ("webp", "jpeg"):
        assert done[name]["outputs"][0]["sha256"] == done[f"{name}-again"]["outputs"][0]["sha256"]

    webp = done["webp"]["outputs"][0]
    assert webp["uri"].endswith("/0.webp")
    assert (webp["format"], webp["width"], webp["height"]) == ("webp", 256, 256)
    data, content_type = stored(webp["uri"])
    assert content_type == "image/webp"
    assert "Seed: 5, Size: 256x256, " in (read_parameters(data) or "")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        assert flipped(watermark.decode(image)) <= MAX_FLIPPED

    jpeg = done["jpeg"]["outputs"][0]
    assert jpeg["uri"].endswith("/0.jpg")
    assert (jpeg["format"], jpeg["width"], jpeg["height"]) == ("jpeg", 64, 96)
    data, content_type = stored(jpeg["uri"])
    assert content_type == "image/jpeg"
    assert (read_parameters(data) or "").startswith("un cercle rouge \u2764\nSteps: 2, ")
