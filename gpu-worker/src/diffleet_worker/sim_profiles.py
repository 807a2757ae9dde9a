"""Modelled timings of a simulated worker by its GPU type (`sim_gpu_profile`).

A fleet-scale simulation (bench/scale.py) mixes GPU types, and a job's time on each is
what placement trades: a step costs what the GPU's throughput allows, and a checkpoint
that is not hot costs its size over the bandwidth it comes through: the object store's
network for a cold load, local NVMe for a warm one, plus building the pipeline. Figures
are typical public ones (fp16, 512x512 SD 1.5 steps; SDXL at 1024x1024 about four
times as long per step), rounded: the model is for comparing placements, not for
predicting a real fleet's latency to the millisecond.

Without `sim_gpu_profile`, the fixed `sim_*` timings apply, as tests script them."""

from dataclasses import dataclass

from diffleet_core.messages import DispatchedJob, ModelRef
from diffleet_core.resources.model_cache import BaseModelFamily
from diffleet_worker.cache.errors import CacheTier
from diffleet_worker.config import WorkerSettings

GB = 1e9
# A ModelCache smaller than this is a test artifact (the stack registers headers of a
# few bytes): it is modelled at its family's typical size instead.
REAL_CHECKPOINT_BYTES = 100 * 2**20
TYPICAL_BYTES = {BaseModelFamily.SD15: 2.1 * GB, BaseModelFamily.SDXL: 6.9 * GB}
# Denoising work per step of each family at its native size, relative to SD 1.5.
STEP_WORK = {BaseModelFamily.SD15: 1.0, BaseModelFamily.SDXL: 4.0}
NATIVE_PIXELS = {BaseModelFamily.SD15: 512 * 512, BaseModelFamily.SDXL: 1024 * 1024}
# The family a model without one (an upscaler, mode upscale's primary model) is timed as.
UNFAMILIED = BaseModelFamily.SD15


@dataclass(frozen=True)
class GpuProfile:
    step_seconds: float  # one SD 1.5 step at 512x512, batch 1
    network_gbps: float  # cold load: download from the object store, GB/s
    disk_gbps: float  # warm load: local NVMe into GPU memory, GB/s
    build_seconds: float  # pipeline construction on the device, any load


# By GPU type as workers announce it and jobs' spec.gpuClass names it (GPUPool gpuType).
PROFILES = {
    "h100": GpuProfile(0.02, network_gbps=2.5, disk_gbps=6.0, build_seconds=1.0),
    "a100": GpuProfile(0.035, network_gbps=1.5, disk_gbps=4.0, build_seconds=1.5),
    "t4": GpuProfile(0.15, network_gbps=0.6, disk_gbps=1.5, build_seconds=3.0),
}
# A GPU type not listed: the T4's figures (the slowest listed, so never optimistic).
FALLBACK = PROFILES["t4"]


@dataclass(frozen=True)
class Timings:
    """How long a simulated worker's loads and steps take."""

    settings: WorkerSettings

    @property
    def profile(self) -> GpuProfile | None:
        if not self.settings.sim_gpu_profile:
            return None
        return PROFILES.get(self.settings.gpu_type, FALLBACK)

    def load_seconds(self, model: ModelRef, tier: CacheTier) -> float:
        """How long `model` takes to load into the hot tier from `tier` (warm or cold)."""
        profile = self.profile
        if profile is None:
            if tier is CacheTier.WARM:
                return self.settings.sim_warm_load_seconds
            return self.settings.sim_load_seconds
        size = model_bytes(model)
        bandwidth = profile.disk_gbps if tier is CacheTier.WARM else profile.network_gbps
        return profile.build_seconds + size / (bandwidth * GB)

    def step_seconds(self, order: DispatchedJob) -> float:
        """How long one denoising step of `order` takes."""
        profile = self.profile
        if profile is None:
            return self.settings.sim_step_seconds
        family = order.model.base_model or UNFAMILIED
        pixels = order.spec.width * order.spec.height / NATIVE_PIXELS[family]
        return profile.step_seconds * STEP_WORK[family] * pixels * order.spec.batch_size


def model_bytes(model: ModelRef) -> float:
    """The checkpoint's size as loads are modelled: its own, or its family's typical one
    for a test artifact."""
    if model.size_bytes is not None and model.size_bytes >= REAL_CHECKPOINT_BYTES:
        return float(model.size_bytes)
    return TYPICAL_BYTES[model.base_model or UNFAMILIED]
