"""A simulated worker's modelled timings by GPU type (diffleet_worker.sim_profiles)."""

from datetime import UTC, datetime

from diffleet_core.messages import DispatchedJob, JobRef, ModelRef
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_worker.cache.errors import CacheTier
from diffleet_worker.config import WorkerSettings
from diffleet_worker.sim_profiles import Timings


def model(base: str, size_bytes: int | None = None) -> ModelRef:
    return ModelRef.model_validate(
        {"namespace": "ns", "name": "m", "source": "s3://b/m.safetensors",
         "format": "safetensors", "type": "checkpoint", "base_model": base,
         "digest": "sha256:" + "0" * 64, "size_bytes": size_bytes}
    )  # fmt: skip


def order(base: str, width: int = 512) -> DispatchedJob:
    return DispatchedJob(
        job=JobRef(namespace="ns", name="j", uid="u", attempt=1),
        spec=GenerationJobSpec.model_validate(
            {"model": "m", "prompt": "p", "width": width, "height": width}
        ),
        seed=1,
        model=model(base),
        output_bucket="out",
        deadline=datetime.now(UTC),
    )


def timings(gpu_type: str, profile: bool = True) -> Timings:
    return Timings(WorkerSettings(worker_id="w", gpu_type=gpu_type, sim_gpu_profile=profile))


def test_a_t4_steps_and_loads_slower_than_an_h100() -> None:
    t4, h100 = timings("t4"), timings("h100")
    assert t4.step_seconds(order("sd15")) > 5 * h100.step_seconds(order("sd15"))
    sdxl = model("sdxl")
    assert t4.load_seconds(sdxl, CacheTier.COLD) > 2 * h100.load_seconds(sdxl, CacheTier.COLD)


def test_a_cold_load_takes_longer_than_a_warm_one_and_grows_with_the_size() -> None:
    a100 = timings("a100")
    assert a100.load_seconds(model("sd15"), CacheTier.COLD) > a100.load_seconds(
        model("sd15"), CacheTier.WARM
    )
    # A test artifact of a few bytes is modelled at its family's size; a real one at its own.
    assert a100.load_seconds(model("sd15", 10), CacheTier.COLD) == a100.load_seconds(
        model("sd15"), CacheTier.COLD
    )
    assert a100.load_seconds(model("sd15", 20 * 10**9), CacheTier.COLD) > 10


def test_an_sdxl_step_at_its_native_size_is_four_sd15_steps() -> None:
    h100 = timings("h100")
    assert h100.step_seconds(order("sdxl", 1024)) == 4 * h100.step_seconds(order("sd15", 512))


def test_without_the_profile_the_fixed_timings_apply() -> None:
    fixed = timings("t4", profile=False)
    settings = fixed.settings
    assert fixed.step_seconds(order("sdxl", 1024)) == settings.sim_step_seconds
    assert fixed.load_seconds(model("sdxl"), CacheTier.COLD) == settings.sim_load_seconds
    assert fixed.load_seconds(model("sdxl"), CacheTier.WARM) == settings.sim_warm_load_seconds
