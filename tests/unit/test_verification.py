"""A ModelCache's artifact is refused when any file has a pickle suffix, in any case: the
operator and the worker apply the one rule, diffleet_core.storage.is_pickle. An
in-memory S3 here; tests/models/test_registration.py verifies real uploads."""

import io
from typing import Any

import pytest

from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import ModelCacheSpec
from diffleet_core.storage import is_pickle
from diffleet_operator.verification import Refused, Verified, verify


class FakeS3:
    def __init__(self, keys: list[str]) -> None:
        self.objects = {key: key.encode() for key in keys}

    def get_paginator(self, operation: str) -> "FakeS3":
        assert operation == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:  # noqa: N803 - boto3's
        return [{"Contents": [{"Key": key} for key in self.objects if key.startswith(Prefix)]}]

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's
        return {"Body": io.BytesIO(self.objects[Key])}


def folder(keys: list[str]) -> tuple[ModelCacheSpec, FakeS3]:
    spec = ModelCacheSpec.model_validate(
        {"source": "s3://models/sd", "format": "diffusers", "baseModel": "sd15"}
    )
    return spec, FakeS3([f"sd/{key}" for key in keys])


@pytest.mark.parametrize(
    "name",
    ["unet/model.ckpt", "unet/model.CKPT", "vae/w.Pt", "w.PTH", "text/x.Bin", "a.PKL", "b.Pickle"],
)
def test_a_pickle_file_in_any_case_refuses_the_folder(name: str) -> None:
    spec, s3 = folder(["model_index.json", "unet/model.safetensors", name])
    result = verify(spec, s3)
    assert isinstance(result, Refused)
    assert result.reason is Reason.UNSAFE_FORMAT
    assert f"sd/{name}" in result.message


def test_a_safetensors_folder_is_verified() -> None:
    spec, s3 = folder(["model_index.json", "unet/model.safetensors", "notes.binder.txt"])
    assert isinstance(verify(spec, s3), Verified)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("model.ckpt", True),
        ("MODEL.CKPT", True),
        ("dir/Weights.Pth", True),
        ("x.bIn", True),
        ("model.safetensors", False),
        ("model.ckpt.safetensors", False),
        ("binaries/readme.md", False),
    ],
)
def test_is_pickle_ignores_case(key: str, expected: bool) -> None:
    assert is_pickle(key) is expected
