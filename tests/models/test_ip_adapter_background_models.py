"""The tiny IP-Adapter, its image encoder and the tiny background remover load as the worker
loads them (ip_adapters.py, background.py) and give what the worker relies on: an image
prompt that changes the picture, a hot pipeline as it was once the adapters are unloaded,
and a foreground probability that varies over the image."""

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.model_cache import ModelCacheSpec
from diffleet_worker import background, ip_adapters
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.device import DevicePolicy
from diffleet_worker.pipelines.common import Generation, call_options, configure
from hack.models.catalog import definition
from hack.models.provision import LocalModel, local_model, spec_fields
from hack.models.untyped import StableDiffusionPipeline
from tests.support.groups import DIFFUSERS

pytestmark = DIFFUSERS

POLICY = DevicePolicy.choose(DeviceKind.CPU, Precision.FLOAT32)
RED, BLUE = (220, 30, 30), (30, 30, 220)


def disc(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), fill=colour)
    return image


@pytest.fixture(scope="module")
def pipe(tiny_sd15: LocalModel) -> Any:
    pipeline = StableDiffusionPipeline.from_pretrained(
        tiny_sd15.path, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def draw(pipe: Any, images: list[Image.Image] | None = None) -> np.ndarray:
    options: dict[str, Any] = {"ip_adapter_image": images} if images else {}
    result = pipe(
        "a circle",
        num_inference_steps=2,
        width=64,
        height=64,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
        **options,
    )
    return np.asarray(result.images[0])


def test_an_image_prompt_changes_the_picture_and_leaves_the_pipeline_as_it_was(pipe: Any) -> None:
    encoder = ip_adapters.load_encoder(local_model("tiny-image-encoder").path, POLICY)
    adapter = local_model("tiny-ip-adapter").path
    processors = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    plain = draw(pipe)
    prompted = {}
    for name, images in (("red", [disc(RED)]), ("blue", [disc(BLUE)])):
        with ip_adapters.applied(pipe, encoder, [ip_adapters.LoadedIpAdapter(adapter, 0.8)]):
            prompted[name] = draw(pipe, images)
    with ip_adapters.applied(
        pipe,
        encoder,
        [ip_adapters.LoadedIpAdapter(adapter, 0.8), ip_adapters.LoadedIpAdapter(adapter, 0.0)],
    ):
        two = draw(pipe, [disc(RED), disc(BLUE)])
    assert np.abs(prompted["red"] - plain).mean() > 0.01
    assert np.abs(prompted["red"] - prompted["blue"]).mean() > 0.001
    # The second adapter at scale 0 adds nothing.
    assert np.allclose(two, prompted["red"], atol=1e-5)
    assert np.array_equal(draw(pipe), plain)
    assert {name: type(p) for name, p in pipe.unet.attn_processors.items()} == processors
    assert pipe.image_encoder is None
    assert pipe.feature_extractor is None
    assert pipe.unet.encoder_hid_proj is None


def test_the_low_memory_retry_with_image_prompts_keeps_the_adapters_attention(pipe: Any) -> None:
    encoder = ip_adapters.load_encoder(local_model("tiny-image-encoder").path, POLICY)
    adapter = ip_adapters.LoadedIpAdapter(local_model("tiny-ip-adapter").path, 0.8)
    spec = GenerationJobSpec.model_validate(
        {"model": "tiny-sd15", "prompt": "a circle", "width": 64, "height": 64, "steps": 2}
    )
    generation = Generation(
        spec=spec,
        seeds=[1],
        policy=POLICY,
        on_step=lambda *_: None,
        low_memory=True,
        image_prompts=(disc(RED),),
    )
    with ip_adapters.applied(pipe, encoder, [adapter]):
        task = configure(pipe, pipe, generation)
        images = task(**call_options(generation), width=64, height=64).images
        POLICY.restore_attention(pipe)
    assert images[0].size == (64, 64)


def test_the_background_remover_gives_an_alpha_that_varies_over_the_image() -> None:
    remover = background.load(local_model("tiny-background-remover").path, POLICY)
    image = disc(RED).resize((96, 64))
    cut_out = background.remove(image, remover)
    assert (cut_out.mode, cut_out.size) == ("RGBA", (96, 64))
    assert np.array_equal(np.asarray(cut_out.convert("RGB")), np.asarray(image))
    alpha = np.asarray(cut_out.getchannel("A"), dtype=int)
    assert alpha.max() - alpha.min() > 100
    assert np.array_equal(alpha, np.asarray(background.remove(image, remover).getchannel("A")))


def test_the_ip_adapter_names_its_image_encoder_in_its_model_cache() -> None:
    spec = ModelCacheSpec.model_validate(
        {
            "source": "s3://models/tiny-ip-adapter.safetensors",
            "format": definition("tiny-ip-adapter").format,
            **spec_fields(definition("tiny-ip-adapter")),
        }
    )
    assert spec.image_encoder == "tiny-image-encoder"
    assert definition("tiny-image-encoder").type.value == "image-encoder"
