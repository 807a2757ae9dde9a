"""Loading model artifacts from local disk into memory, the way diffusers intends:
`from_pretrained` for diffusers folders, `from_single_file` for single .safetensors
checkpoints; spandrel for upscalers and restorers in one .safetensors file (it detects
the architecture from the weights, CodeFormer among them when the worker is installed with
its `restorers-noncommercial` extra); weights only from safetensors (the cache refuses
pickle files earlier). LoRAs and embeddings are not loaded here: a job applies their
files to its pipeline for the run."""

import gc
import importlib
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    MotionAdapter,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLPipeline,
    StableVideoDiffusionPipeline,
    T2IAdapter,
)
from spandrel import MAIN_REGISTRY, ArchRegistry, ImageModelDescriptor, ModelBase, ModelLoader

from diffleet_core.messages import ModelRef
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType
from diffleet_worker import background, detectors, ip_adapters, safety
from diffleet_worker.device import DevicePolicy, free_device_memory

PIPELINES: dict[BaseModelFamily, Any] = {
    BaseModelFamily.SD15: StableDiffusionPipeline,
    BaseModelFamily.SDXL: StableDiffusionXLPipeline,
    BaseModelFamily.SVD: StableVideoDiffusionPipeline,
}


def spandrel_registry() -> ArchRegistry:
    """spandrel's architectures, plus those of spandrel-extra-arches (CodeFormer, among
    others) where that package is installed. Its architectures come under non-commercial
    or copyleft licences (CodeFormer's S-Lab licence forbids commercial use), so it is the
    opt-in extra `restorers-noncommercial`, left out of the worker's image."""
    registry = ArchRegistry()
    registry.add(*MAIN_REGISTRY)
    try:
        # Imported by name: the package carries no type information. Its modules use
        # torch.jit.script, which torch warns about once per process at import.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            extra = importlib.import_module("spandrel_extra_arches")
    except ModuleNotFoundError:
        return registry
    registry.add(*extra.EXTRA_REGISTRY, ignore_duplicates=True)
    return registry


SPANDREL_REGISTRY = spandrel_registry()


class Loader:
    """Loads checkpoints (SD 1.5, SDXL, SVD), ControlNets, T2I-Adapters, VAEs, motion adapters,
    upscalers, restorers, safety checkers, ControlNet detectors, image encoders and
    background removers for the hot tier, and frees them again."""

    def __init__(self, policy: DevicePolicy) -> None:
        self.policy = policy

    def load(self, ref: ModelRef, path: Path) -> Any:
        if ref.type is ModelType.CONTROLNET:
            return self._module(ControlNetModel, path)
        if ref.type is ModelType.T2I_ADAPTER:
            return self._module(T2IAdapter, path)
        if ref.type is ModelType.CHECKPOINT and ref.base_model is not None:
            return self._pipeline(ref.base_model, path)
        if ref.type is ModelType.MOTION_ADAPTER:
            return self._module(MotionAdapter, path)
        if ref.type is ModelType.VAE:
            return self._module(AutoencoderKL, path)
        if ref.type is ModelType.SAFETY:
            return safety.load(path, self.policy)
        if ref.type is ModelType.IMAGE_ENCODER:
            return ip_adapters.load_encoder(path, self.policy)
        if ref.type is ModelType.BACKGROUND_REMOVER:
            return background.load(path, self.policy)
        if ref.type is ModelType.DETECTOR and ref.control_type is not None:
            return detectors.load(path, ref.control_type, self.policy)
        if ref.type is ModelType.UPSCALER and path.is_dir():
            return self._upscale_pipeline(path)
        if ref.type in (ModelType.UPSCALER, ModelType.RESTORER):
            return self._spandrel(ref, path)
        raise ValueError(f"model {ref.name}: a {ref.type.value} is not loaded on its own")

    def _pipeline(self, family: BaseModelFamily, path: Path) -> Any:
        pipeline_class = PIPELINES[family]
        options: dict[str, Any] = {"dtype": self.policy.dtype}
        if family is BaseModelFamily.SD15:
            options |= {"safety_checker": None, "requires_safety_checker": False}
        if path.is_dir():
            pipe = pipeline_class.from_pretrained(
                path, local_files_only=True, use_safetensors=True, **options
            )
        else:
            pipe = pipeline_class.from_single_file(path, local_files_only=True, **options)
        return self.policy.prepare(pipe)

    def _module(self, model_class: Any, path: Path) -> Any:
        """A ControlNet, T2I-Adapter, VAE or motion adapter, from its diffusers folder (or
        single file, where the class loads one), on the device."""
        options: dict[str, Any] = {"dtype": self.policy.dtype}
        if path.is_dir():
            model = model_class.from_pretrained(
                path, local_files_only=True, use_safetensors=True, **options
            )
        else:
            model = model_class.from_single_file(path, local_files_only=True, **options)
        return model.to(self.policy.device)

    def _upscale_pipeline(self, path: Path) -> Any:
        """The Stable Diffusion x4 upscaler, from its diffusers folder."""
        pipe = StableDiffusionUpscalePipeline.from_pretrained(  # type: ignore[no-untyped-call]
            path, local_files_only=True, use_safetensors=True, dtype=self.policy.dtype
        )
        return self.policy.prepare(pipe)

    def _spandrel(self, ref: ModelRef, path: Path) -> ImageModelDescriptor[Any]:
        """An image-to-image model on the device, in the policy's dtype where its
        architecture supports it (else float32)."""
        model = ModelLoader(self.policy.device, SPANDREL_REGISTRY).load_from_file(path)
        if not isinstance(model, ImageModelDescriptor):
            raise ValueError(
                f"model {ref.name}: spandrel loads it as {type(model).__name__}, "
                "not an image-to-image model"
            )
        dtype = self.policy.dtype
        supported = (
            dtype == torch.float32
            or (dtype == torch.float16 and model.supports_half)
            or (dtype == torch.bfloat16 and model.supports_bfloat16)
        )
        return model.to(dtype if supported else torch.float32).eval()

    def release(self, model: Any) -> None:
        """Called by the hot tier when it drops a model: frees its device memory."""
        del model
        gc.collect()
        free_device_memory(self.policy)


def resident_bytes(model: Any) -> int:
    """Bytes of a loaded pipeline's or model's parameters and buffers."""
    if isinstance(model, torch.nn.Module):
        modules = [model]
    elif isinstance(model, ModelBase):
        modules = [model.model]  # a spandrel descriptor
    else:
        modules = [c for c in model.components.values() if isinstance(c, torch.nn.Module)]
    return sum(
        tensor.numel() * tensor.element_size()
        for module in modules
        for tensor in (*module.parameters(), *module.buffers())
    )
