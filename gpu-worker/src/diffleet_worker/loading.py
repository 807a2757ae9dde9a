"""Loading model artifacts from local disk into memory, the way diffusers intends:
`from_pretrained` for diffusers folders, `from_single_file` for single .safetensors
checkpoints; weights only from safetensors (the cache refuses pickle files earlier)."""

import gc
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, StableDiffusionPipeline, StableDiffusionXLPipeline

from diffleet_core.messages import ModelRef
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType
from diffleet_worker import safety
from diffleet_worker.device import DevicePolicy, free_device_memory

PIPELINES: dict[BaseModelFamily, Any] = {
    BaseModelFamily.SD15: StableDiffusionPipeline,
    BaseModelFamily.SDXL: StableDiffusionXLPipeline,
}


class Loader:
    """Loads checkpoints, ControlNets and safety checkers for the hot tier, and frees them
    again."""

    def __init__(self, policy: DevicePolicy) -> None:
        self.policy = policy

    def load(self, ref: ModelRef, path: Path) -> Any:
        if ref.type is ModelType.CONTROLNET:
            return self._controlnet(path)
        if ref.type is ModelType.CHECKPOINT and ref.base_model is not None:
            return self._pipeline(ref.base_model, path)
        if ref.type is ModelType.SAFETY:
            return safety.load(path, self.policy)
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

    def _controlnet(self, path: Path) -> Any:
        options: dict[str, Any] = {"dtype": self.policy.dtype}
        if path.is_dir():
            model = ControlNetModel.from_pretrained(  # type: ignore[no-untyped-call]
                path, local_files_only=True, use_safetensors=True, **options
            )
        else:
            model = ControlNetModel.from_single_file(path, local_files_only=True, **options)
        return model.to(self.policy.device)

    def release(self, model: Any) -> None:
        """Called by the hot tier when it drops a model: frees its device memory."""
        del model
        gc.collect()
        free_device_memory(self.policy)


def resident_bytes(model: Any) -> int:
    """Bytes of a loaded pipeline's or model's parameters and buffers."""
    modules = (
        [model]
        if isinstance(model, torch.nn.Module)
        else [c for c in model.components.values() if isinstance(c, torch.nn.Module)]
    )
    return sum(
        tensor.numel() * tensor.element_size()
        for module in modules
        for tensor in (*module.parameters(), *module.buffers())
    )
