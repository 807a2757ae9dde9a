"""The model cache against the local S3 server: cold, hot, warm, corruption and refusal,
with real safetensors files and a diffusers-style folder."""

import hashlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from botocore.config import Config
from safetensors.torch import load_file, save_file

from diffleet_core.messages import ModelRef
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_core.storage import manifest_digest
from diffleet_worker.cache import (
    CacheTier,
    HotCache,
    ModelCacheError,
    ModelRefusedError,
    ModelStore,
    S3Source,
    WarmCache,
)

BUCKET = "diffleet-models"
Weights = dict[str, torch.Tensor]


@pytest.fixture
def s3(local_stack: dict[str, str]) -> Any:
    return boto3.client("s3", config=Config(connect_timeout=5, read_timeout=30))


@pytest.fixture
def prefix(s3: Any) -> Iterator[str]:
    """A key prefix of this test's own in the models bucket, emptied afterwards."""
    prefix = f"tests/cache-{uuid.uuid4().hex[:8]}/"
    yield prefix
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    for item in listed:
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])


class Models:
    """Uploads small models and says how to find them (ModelRef)."""

    def __init__(self, s3: Any, prefix: str, tmp: Path) -> None:
        self.s3 = s3
        self.prefix = prefix
        self.tmp = tmp
        tmp.mkdir()

    def weights_file(self, seed: int) -> bytes:
        generator = torch.Generator().manual_seed(seed)
        path = self.tmp / f"weights-{seed}.safetensors"
        save_file({"w": torch.randn(64, 64, generator=generator)}, str(path))
        return path.read_bytes()

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=self.prefix + key, Body=data)

    def single(self, name: str, seed: int) -> ModelRef:
        data = self.weights_file(seed)
        self.put(f"{name}.safetensors", data)
        return ref(
            name,
            f"s3://{BUCKET}/{self.prefix}{name}.safetensors",
            ModelFormat.SAFETENSORS,
            hashlib.sha256(data).hexdigest(),
        )

    def folder(self, name: str, files: dict[str, bytes]) -> ModelRef:
        for path, data in files.items():
            self.put(f"{name}/{path}", data)
        digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
        return ref(
            name,
            f"s3://{BUCKET}/{self.prefix}{name}/",
            ModelFormat.DIFFUSERS,
            manifest_digest(digests),
        )

    def diffusers(self, name: str) -> ModelRef:
        return self.folder(
            name,
            {
                "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
                "unet/config.json": b'{"sample_size": 8}',
                "unet/diffusion_pytorch_model.safetensors": self.weights_file(1),
                "vae/diffusion_pytorch_model.safetensors": self.weights_file(2),
            },
        )


def ref(name: str, source: str, model_format: ModelFormat, digest: str) -> ModelRef:
    return ModelRef(
        namespace="test",
        name=name,
        source=source,
        format=model_format,
        type=ModelType.CHECKPOINT,
        base_model=BaseModelFamily.SD15,
        digest=digest,
    )


@pytest.fixture
def models(s3: Any, prefix: str, tmp_path: Path) -> Models:
    return Models(s3, prefix, tmp_path / "uploads")


class Loader:
    """Loads safetensors (a file, or every file of a folder) and counts its calls."""

    def __init__(self) -> None:
        self.loads = 0
        self.released: list[Weights] = []

    def __call__(self, path: Path) -> Weights:
        self.loads += 1
        if not path.is_dir():
            return load_file(path)
        return {
            f"{file.relative_to(path).as_posix()}:{name}": tensor
            for file in path.rglob("*.safetensors")
            for name, tensor in load_file(file).items()
        }

    def release(self, weights: Weights) -> None:
        self.released.append(weights)


def size_of(weights: Weights) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in weights.values())


def make_store(
    s3: Any, root: Path, loader: Loader, *, memory: int = 1 << 30, disk: int = 1 << 30
) -> ModelStore[Weights]:
    return ModelStore(
        S3Source(s3, attempts=3, backoff_seconds=0.1),
        WarmCache(root, budget_bytes=disk),
        HotCache(memory, size_of=size_of, release=loader.release),
    )


MODEL_BYTES = 64 * 64 * 4  # one float32 64x64 tensor


def test_cold_then_hot_then_warm_after_eviction(s3: Any, models: Models, tmp_path: Path) -> None:
    loader = Loader()
    store = make_store(s3, tmp_path / "cache", loader, memory=MODEL_BYTES)
    first, second = models.single("first", seed=1), models.single("second", seed=2)

    with store.acquire(first, loader) as loaded:
        assert loaded.tier is CacheTier.COLD
        assert loaded.value["w"].shape == (64, 64)
    assert (store.stats.downloads, loader.loads) == (1, 1)
    assert store.hot_digests() == [first.digest]
    assert store.warm_digests() == [first.digest]

    with store.acquire(first, loader) as loaded:
        assert loaded.tier is CacheTier.HOT
    assert (store.stats.downloads, loader.loads) == (1, 1)  # no download, no load

    with store.acquire(second, loader) as loaded:  # the memory budget holds one model
        assert loaded.tier is CacheTier.COLD
    assert store.hot_digests() == [second.digest]
    assert len(loader.released) == 1
    assert store.warm_digests() == [second.digest, first.digest]

    with store.acquire(first, loader) as loaded:
        assert loaded.tier is CacheTier.WARM
        assert torch.equal(
            loaded.value["w"],
            load_file(tmp_path / "cache" / f"{first.digest}.safetensors")["w"],
        )
    assert (store.stats.downloads, loader.loads) == (2, 3)  # loaded from disk, no download
    assert (
        store.stats.downloaded_bytes
        == 2 * (tmp_path / "cache" / f"{first.digest}.safetensors").stat().st_size
    )


def test_a_diffusers_folder_stays_warm_across_a_restart(
    s3: Any, models: Models, tmp_path: Path
) -> None:
    folder = models.diffusers("pipeline")
    loader = Loader()
    with make_store(s3, tmp_path / "cache", loader).acquire(folder, loader) as loaded:
        assert loaded.tier is CacheTier.COLD
        assert sorted(loaded.value) == [
            "unet/diffusion_pytorch_model.safetensors:w",
            "vae/diffusion_pytorch_model.safetensors:w",
        ]
    on_disk = tmp_path / "cache" / folder.digest
    assert (on_disk / "unet" / "config.json").read_bytes() == b'{"sample_size": 8}'

    restarted = make_store(s3, tmp_path / "cache", loader)
    assert restarted.warm_digests() == [folder.digest]
    assert restarted.hot_digests() == []
    with restarted.acquire(folder, loader) as loaded:
        assert loaded.tier is CacheTier.WARM
    assert restarted.stats.downloads == 0


def test_a_lora_is_fetched_to_disk_without_loading(s3: Any, models: Models, tmp_path: Path) -> None:
    lora = models.single("ink-style", seed=3)
    store = make_store(s3, tmp_path / "cache", Loader())

    with store.fetch(lora) as fetched:
        assert fetched.tier is CacheTier.COLD
        assert hashlib.sha256(fetched.path.read_bytes()).hexdigest() == lora.digest
    with store.fetch(lora) as fetched:
        assert fetched.tier is CacheTier.WARM
    assert store.hot_digests() == []
    assert store.stats.downloads == 1


def test_a_corrupted_file_is_detected_by_sha256_and_fetched_again(
    s3: Any, models: Models, tmp_path: Path
) -> None:
    model = models.single("model", seed=4)
    loader = Loader()
    store = make_store(s3, tmp_path / "cache", loader)
    store.acquire(model, loader).close()
    cached = tmp_path / "cache" / f"{model.digest}.safetensors"
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights: still parses as safetensors
    cached.write_bytes(bytes(data))
    assert store.evict(model.digest)

    with store.acquire(model, loader) as loaded:
        assert loaded.tier is CacheTier.COLD
    assert store.stats.corrupt_refetches == 1
    assert store.stats.downloads == 2
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == model.digest


def test_a_corrupted_file_in_a_folder_is_detected_and_fetched_again(
    s3: Any, models: Models, tmp_path: Path
) -> None:
    folder = models.diffusers("pipeline")
    store = make_store(s3, tmp_path / "cache", Loader())
    store.fetch(folder).close()
    (tmp_path / "cache" / folder.digest / "unet" / "config.json").write_bytes(b"{}")

    with store.fetch(folder) as fetched:
        assert fetched.tier is CacheTier.COLD
        assert (fetched.path / "unet" / "config.json").read_bytes() == b'{"sample_size": 8}'
    assert store.stats.corrupt_refetches == 1


def test_a_cached_file_deleted_behind_the_cache_is_fetched_again(
    s3: Any, models: Models, tmp_path: Path
) -> None:
    lora = models.single("lora", seed=7)
    store = make_store(s3, tmp_path / "cache", Loader())
    store.fetch(lora).close()
    (tmp_path / "cache" / f"{lora.digest}.safetensors").unlink()

    with store.fetch(lora) as fetched:
        assert fetched.tier is CacheTier.COLD
        assert fetched.path.exists()
    assert store.stats.downloads == 2
    assert store.warm_digests() == [lora.digest]


def test_a_pickle_model_is_refused_before_download(s3: Any, models: Models, tmp_path: Path) -> None:
    models.put("evil.bin", b"\x80\x04pickled")
    single = ref(
        "evil", f"s3://{BUCKET}/{models.prefix}evil.bin", ModelFormat.SAFETENSORS, "0" * 64
    )
    folder = models.folder(
        "mixed",
        {"model_index.json": b"{}", "unet/diffusion_pytorch_model.bin": b"\x80\x04pickled"},
    )
    loader = Loader()
    store = make_store(s3, tmp_path / "cache", loader)

    with pytest.raises(ModelRefusedError, match=r"evil\.bin is not a \.safetensors file") as one:
        store.acquire(single, loader)
    with pytest.raises(ModelRefusedError, match=r"pickle files are refused.*unet/") as other:
        store.fetch(folder)

    assert one.value.reason is other.value.reason is Reason.UNSAFE_FORMAT
    assert store.stats.downloads == 0
    assert loader.loads == 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".partial"]


def test_a_digest_mismatch_leaves_nothing_that_looks_cached(
    s3: Any, models: Models, tmp_path: Path
) -> None:
    model = models.single("model", seed=5).model_copy(update={"digest": "f" * 64})
    store = make_store(s3, tmp_path / "cache", Loader())

    with pytest.raises(ModelCacheError, match="hashes to") as mismatch:
        store.fetch(model)

    assert mismatch.value.reason is Reason.DIGEST_MISMATCH
    assert store.warm_digests() == []
    assert store.warm.used_bytes == 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".partial"]
    assert list((tmp_path / "cache" / ".partial").iterdir()) == []


def test_a_missing_source_fails_with_source_not_found(
    s3: Any, models: Models, tmp_path: Path
) -> None:
    missing = ref(
        "gone", f"s3://{BUCKET}/{models.prefix}gone.safetensors", ModelFormat.SAFETENSORS, "0" * 64
    )
    with pytest.raises(ModelCacheError, match="not found") as error:
        make_store(s3, tmp_path / "cache", Loader()).fetch(missing)
    assert error.value.reason is Reason.SOURCE_NOT_FOUND


def test_concurrent_jobs_for_one_model_download_and_load_it_once(
    s3: Any, models: Models, tmp_path: Path
) -> None:
    model = models.single("model", seed=6)
    loader = Loader()
    store = make_store(s3, tmp_path / "cache", loader)
    ready = threading.Barrier(4)

    def job() -> CacheTier:
        ready.wait(timeout=10)
        with store.acquire(model, loader) as loaded:
            return loaded.tier

    with ThreadPoolExecutor(4) as pool:
        tiers = sorted(pool.map(lambda _: job(), range(4)), key=list(CacheTier).index)

    assert tiers == [CacheTier.HOT] * 3 + [CacheTier.COLD]
    assert (store.stats.downloads, loader.loads) == (1, 1)
