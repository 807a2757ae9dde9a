"""Where and how pipelines run: the device, dtype and attention policy of this worker.

CUDA when present: fp16 (or bf16), PyTorch SDPA attention (diffusers' default on torch 2),
xformers when it is installed and its kernels run here, channels-last UNet, optional
torch.compile, and VAE tiling for large images. Otherwise CPU in fp32. The same policy,
seed and thread count give the same bytes: deterministic algorithms are on by default.
"""

import logging
import os
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import torch

from diffleet_worker.config import DeviceKind, Precision

logger = logging.getLogger(__name__)


DTYPES = {
    Precision.FLOAT32: torch.float32,
    Precision.FLOAT16: torch.float16,
    Precision.BFLOAT16: torch.bfloat16,
}


class DeviceOutOfMemoryError(Exception):
    """The device ran out of memory (CUDA), or a run would exceed the CPU memory budget."""


def xformers_runs() -> bool:
    """xformers is installed and its attention kernel runs on this GPU with this torch. A
    wheel built for another torch imports but cannot run its kernels, and diffusers would
    then fail at the first pipeline; the worker uses PyTorch's SDPA instead."""
    if find_spec("xformers") is None:
        return False
    try:
        import xformers.ops  # optional: the worker's cuda extra

        probe = torch.randn((1, 2, 40), device="cuda", dtype=torch.float16)
        xformers.ops.memory_efficient_attention(probe, probe, probe)
    except Exception as error:  # noqa: BLE001 - any failure means SDPA
        logger.warning("xformers is installed but cannot run here, attention uses SDPA: %s", error)
        return False
    return True


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    dtype: torch.dtype
    xformers: bool
    channels_last: bool
    compile_unet: bool
    vae_tiling_pixels: int

    @classmethod
    def choose(
        cls,
        kind: DeviceKind,
        precision: Precision,
        *,
        use_xformers: bool = True,
        compile_unet: bool = False,
        vae_tiling_pixels: int = 1024 * 1024,
    ) -> "DevicePolicy":
        cuda = kind is DeviceKind.CUDA or (kind is DeviceKind.AUTO and torch.cuda.is_available())
        if cuda and not torch.cuda.is_available():
            raise RuntimeError("device cuda was asked for, but CUDA is not available")
        if precision is Precision.AUTO:
            precision = Precision.FLOAT16 if cuda else Precision.FLOAT32
        return cls(
            device=torch.device("cuda" if cuda else "cpu"),
            dtype=DTYPES[precision],
            xformers=cuda and use_xformers and xformers_runs(),
            channels_last=cuda,
            compile_unet=cuda and compile_unet,
            vae_tiling_pixels=vae_tiling_pixels,
        )

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def prepare(self, pipe: Any) -> Any:
        """Moves a freshly loaded pipeline to the device and applies the policy."""
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.restore_attention(pipe)
        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
        if self.compile_unet:
            pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
        return pipe

    def restore_attention(self, pipe: Any) -> None:
        """The policy's attention (after a low-memory run sliced it): SDPA or xformers."""
        pipe.disable_attention_slicing()
        if self.xformers:
            pipe.enable_xformers_memory_efficient_attention()

    def describe(self) -> str:
        attention = "xformers" if self.xformers else "sdpa"
        return f"{self.device.type} {str(self.dtype).removeprefix('torch.')} {attention}"


@dataclass(frozen=True)
class MemoryBudget:
    """Simulated device memory for CPU workers (0: unlimited), so the out-of-memory path
    runs without a GPU. The estimate counts the two big working sets of a run: the
    attention matrix at latent resolution (divided by the heads when sliced) and the
    VAE decoder's activations (capped at one tile when tiled)."""

    limit_bytes: int = 0

    def check(self, width: int, height: int, batch: int, low_memory: bool) -> None:
        needed = self.estimate(width, height, batch, low_memory)
        if self.limit_bytes and needed > self.limit_bytes:
            raise DeviceOutOfMemoryError(
                f"the run needs about {needed} bytes; the memory budget is {self.limit_bytes}"
            )

    @staticmethod
    def estimate(width: int, height: int, batch: int, low_memory: bool) -> int:
        tokens = (width // 8) * (height // 8)
        heads = 1 if low_memory else 8
        attention = tokens * tokens * 2 * batch * heads * 4
        decoded = min(width * height, 512 * 512) if low_memory else width * height
        return attention + decoded * batch * 128 * 4


def configure_torch(threads: int, deterministic: bool) -> None:
    """Process-wide torch settings; call once before any pipeline is loaded."""
    if threads > 0:
        torch.set_num_threads(threads)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (CUDA docs, "Reproducibility").
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def free_device_memory(policy: DevicePolicy) -> None:
    if policy.is_cuda:
        torch.cuda.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, DeviceOutOfMemoryError | torch.cuda.OutOfMemoryError)
