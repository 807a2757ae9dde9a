"""Textual inversion's pure pieces (issue 20): the captions' word replaced by the token,
the embedding's metadata, and the simulated worker's embedding file."""

import pytest
from safetensors.torch import load

from diffleet_core.resources.training_job import TrainingJobSpec
from diffleet_worker.simulated_training import EMBEDDING_DIM, safetensors_bytes
from diffleet_worker.training import output
from diffleet_worker.training.embedding import SpecError, token_captions

SPEC = TrainingJobSpec.model_validate(
    {
        "baseModel": "sd15",
        "dataset": "s3://diffleet-uploads/team/datasets/zorp/",
        "output": {"name": "zorp-token"},
        "method": "textual-inversion",
        "placeholder": "zorp",
        "steps": 40,
        "learningRate": 5e-3,
        "resolution": 64,
    }
)


def test_the_placeholder_word_becomes_the_token_in_any_case() -> None:
    captions = ["a zorp circle", "Zorp, on white", "a zorpish square", "two zorp zorp"]
    assert token_captions(captions, "zorp", "zorp-token") == [
        "a zorp-token circle",
        "zorp-token, on white",
        "a zorpish square",  # another word
        "two zorp-token zorp-token",
    ]


def test_a_dataset_without_the_placeholder_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec\.placeholder: no caption of the dataset"):
        token_captions(["a blue circle"], "zorp", "zorp-token")


def test_the_embedding_metadata_names_the_training_not_a_lora() -> None:
    meta = output.embedding_metadata(SPEC, 7, 16, "epsilon")
    assert {
        "ss_seed": "7",
        "ss_max_train_steps": "40",
        "ss_learning_rate": "0.005",
        "ss_resolution": "(64, 64)",
        "ss_num_train_images": "16",
        "ss_sd_model_name": "sd15",
        "ss_base_model_version": "sd_v1",
        "diffleet.method": "textual-inversion",
        "diffleet.placeholder": "zorp",
    }.items() <= meta.items()
    assert not any(key.startswith("ss_network") for key in meta)


def test_the_simulated_embedding_is_one_vector_under_the_token() -> None:
    data = safetensors_bytes({"ss_seed": "7"}, {"zorp-token": [1, EMBEDDING_DIM]})
    tensors = load(data)
    assert list(tensors) == ["zorp-token"]
    assert tensors["zorp-token"].shape == (1, EMBEDDING_DIM)
    assert not tensors["zorp-token"].any()
