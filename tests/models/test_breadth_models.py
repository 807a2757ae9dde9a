"""The upscalers, face restorer, embedding, VAE and safety checkers load as the worker
loads them and give what the worker relies on: x4 images, restored images of the input's
size, an embedding that changes the prompt, a VAE that changes the picture, and fixed
safety verdicts."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from spandrel import ImageModelDescriptor, ModelLoader
from transformers import CLIPImageProcessor

from diffleet_core.resources.model_cache import ModelCacheSpec
from hack.models import restorers, safety, tiny, upscalers
from hack.models.catalog import CATALOG, ModelDefinition
from hack.models.provision import LocalModel, local_model, spec_fields
from hack.models.registry import describe
from hack.models.untyped import (
    AutoencoderKL,
    StableDiffusionPipeline,
    StableDiffusionSafetyChecker,
    StableDiffusionUpscalePipeline,
)
from tests.support.groups import DIFFUSERS

pytestmark = DIFFUSERS


def spandrel_model(name: str) -> ImageModelDescriptor[Any]:
    descriptor = ModelLoader(device="cpu").load_from_file(local_model(name).path)
    assert isinstance(descriptor, ImageModelDescriptor)
    return descriptor.eval()


def quadrants(size: int) -> torch.Tensor:
    """An RGB image (1, 3, size, size) in [0, 1]: red, green, blue and white quadrants."""
    image = torch.zeros(1, 3, size, size)
    half = size // 2
    image[0, 0, :half, :half] = 1
    image[0, 1, :half, half:] = 1
    image[0, 2, half:, :half] = 1
    image[0, :, half:, half:] = 1
    return image


def test_esrgan_is_an_x4_upscaler_that_keeps_colours_and_positions() -> None:
    model = spandrel_model("tiny-esrgan-x4")
    assert (model.architecture.id, model.purpose, model.scale) == ("ESRGAN", "SR", 4)
    image = quadrants(16)
    with torch.no_grad():
        upscaled = model(image)
    assert upscaled.shape == (1, 3, 64, 64)
    nearest = torch.nn.functional.interpolate(image, scale_factor=4, mode="nearest")
    assert float((upscaled - nearest).abs().mean()) < 0.05


def test_restorer_is_a_face_restorer_that_keeps_the_size() -> None:
    model = spandrel_model("tiny-restoreformer")
    assert (model.architecture.id, model.purpose, model.scale) == ("RestoreFormer", "FaceSR", 1)
    with torch.no_grad():
        restored = model(quadrants(64))
    assert restored.shape == (1, 3, 64, 64)
    assert float(restored.min()) >= 0.0
    assert float(restored.max()) <= 1.0


def test_sd_x4_upscaler_pipeline_draws_four_times_the_input() -> None:
    pipeline = StableDiffusionUpscalePipeline.from_pretrained(
        local_model("tiny-sd-x4-upscaler").path, local_files_only=True
    )
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline(
        "a red circle",
        image=Image.new("RGB", (24, 16), "red"),
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 96, 3)


def test_embedding_loads_into_tiny_sd15_as_its_tokens_vectors(tiny_sd15: LocalModel) -> None:
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd15.path, local_files_only=True)
    path = local_model("tiny-embedding").path
    # The embedding's token is its ModelCache's name.
    pipeline.load_textual_inversion(str(path), token="tiny-embedding")  # noqa: S106
    prompt = pipeline.maybe_convert_prompt("a tiny-embedding circle", pipeline.tokenizer)
    assert prompt == "a tiny-embedding tiny-embedding_1 circle"
    tokens = pipeline.tokenizer.convert_tokens_to_ids(["tiny-embedding", "tiny-embedding_1"])
    assert tokens == pipeline.tokenizer(prompt).input_ids[2:4]
    vectors = pipeline.text_encoder.get_input_embeddings().weight[tokens]
    assert torch.equal(vectors, load_file(path)["emb_params"])


def test_vae_decodes_the_same_latents_to_another_picture(tiny_sd15: LocalModel) -> None:
    own = AutoencoderKL.from_pretrained(tiny_sd15.path, subfolder="vae", local_files_only=True)
    other = AutoencoderKL.from_pretrained(local_model("tiny-vae").path, local_files_only=True)
    assert other.config.latent_channels == own.config.latent_channels
    assert other.config.block_out_channels == own.config.block_out_channels
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded_own, decoded_other = (vae.decode(latents).sample for vae in (own, other))
    assert decoded_own.shape == decoded_other.shape == (1, 3, 64, 64)
    assert float((decoded_own - decoded_other).abs().mean()) > 0.05


@pytest.mark.parametrize(
    ("name", "flagged"), [("tiny-safety", False), ("tiny-safety-strict", True)]
)
def test_safety_checker_verdicts_are_fixed(name: str, flagged: bool) -> None:
    folder = local_model(name).path
    checker = StableDiffusionSafetyChecker.from_pretrained(folder, local_files_only=True).eval()
    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    images = [np.full((48, 64, 3), value, dtype=np.float32) for value in (0.0, 0.5, 1.0)]
    clip_input = processor(images, return_tensors="pt", do_rescale=False).pixel_values
    _, verdicts = checker(clip_input=clip_input, images=[image.copy() for image in images])
    assert verdicts == [flagged] * len(images)


@pytest.mark.parametrize("model", CATALOG, ids=lambda model: model.name)
def test_every_catalog_model_makes_a_valid_model_cache(model: ModelDefinition) -> None:
    """What `make models` applies passes the ModelCache rules (baseModel only where the
    type has a family, the formats each type allows)."""
    spec = ModelCacheSpec.model_validate(
        {"source": "s3://models/system/x/", "format": model.format, **spec_fields(model)}
    )
    assert spec.type is model.type


@pytest.mark.parametrize(
    "build",
    [
        tiny.build_embedding,
        tiny.build_vae,
        upscalers.build_esrgan,
        upscalers.build_sd_x4_upscaler,
        restorers.build_restoreformer,
        safety.build_strict,
    ],
)
def test_builds_are_the_same_bytes_every_time(
    tmp_path: Path, build: Callable[[Path], None]
) -> None:
    for copy in ("first", "second"):
        (tmp_path / copy).mkdir()
        build(tmp_path / copy)
    assert describe(tmp_path / "first").files == describe(tmp_path / "second").files
