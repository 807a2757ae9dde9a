"""What the cache refuses by name, and the digests it computes on disk."""

import hashlib
from pathlib import Path

import pytest

from diffleet_core.messages import ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_core.storage import manifest_digest
from diffleet_worker.cache import ModelRefusedError
from diffleet_worker.cache.digests import digest_of, size_of
from diffleet_worker.cache.formats import check_folder, check_single_file, is_plain_relative


def ref(source: str, model_format: ModelFormat) -> ModelRef:
    return ModelRef(
        namespace="ns",
        name="m",
        source=source,
        format=model_format,
        type=ModelType.CHECKPOINT,
        base_model=BaseModelFamily.SD15,
        digest="0" * 64,
    )


@pytest.mark.parametrize(
    "source", ["s3://b/m.bin", "s3://b/m.ckpt", "s3://b/m.pt", "s3://b/m", "s3://b/m.BIN"]
)
def test_a_single_file_model_must_be_safetensors(source: str) -> None:
    with pytest.raises(ModelRefusedError, match=r"not a \.safetensors file") as refused:
        check_single_file(ref(source, ModelFormat.SAFETENSORS))
    assert refused.value.reason is Reason.UNSAFE_FORMAT
    assert refused.value.retryable is False


def test_a_safetensors_file_passes() -> None:
    check_single_file(ref("s3://b/m.safetensors", ModelFormat.SAFETENSORS))


@pytest.mark.parametrize("pickled", ["unet/diffusion_pytorch_model.bin", "unet/weights.CKPT"])
def test_a_folder_with_a_pickle_file_is_refused_naming_it(pickled: str) -> None:
    folder = ref("s3://b/m/", ModelFormat.DIFFUSERS)
    paths = ["model_index.json", pickled, "vae/w.safetensors"]
    with pytest.raises(ModelRefusedError, match=rf"pickle files are refused.*{pickled}"):
        check_folder(folder, paths)


@pytest.mark.parametrize("path", ["../x.safetensors", "/etc/x", "a//b", "a/", "", "a/./b"])
def test_a_folder_path_that_leaves_the_folder_is_refused(path: str) -> None:
    with pytest.raises(ModelRefusedError, match="must stay inside the folder"):
        check_folder(ref("s3://b/m/", ModelFormat.DIFFUSERS), [path])


def test_plain_relative_paths() -> None:
    assert is_plain_relative("unet/config.json")
    assert is_plain_relative("model_index.json")
    assert not is_plain_relative("unet/../../x")


def test_digests_of_a_file_and_a_folder_match_what_the_operator_computes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "w.safetensors").write_bytes(b"weights")
    (folder / "model_index.json").write_bytes(b"{}")

    expected = manifest_digest(
        {
            "unet/w.safetensors": hashlib.sha256(b"weights").hexdigest(),
            "model_index.json": hashlib.sha256(b"{}").hexdigest(),
        }
    )
    assert digest_of(folder) == expected
    assert digest_of(folder / "model_index.json") == hashlib.sha256(b"{}").hexdigest()
    assert size_of(folder) == 9
