"""IP-Adapter image prompts for one job: the job's adapters loaded into the hot base
pipeline with its image encoder, each at its scale, for the run; afterwards the pipeline
is as it was (adapters unloaded, attention processors and components restored), so the
next job on it runs the base model exactly.

The image encoder (a ModelCache of type image-encoder: a transformers
CLIPVisionModelWithProjection folder with its CLIPImageProcessor's configuration) is a
model of the hot tier; the adapters are safetensors files diffusers' load_ip_adapter
reads from the worker's cache, never from a hub."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from diffleet_worker.device import DevicePolicy

# The pipeline components an image encoder fills, named as in diffusers' pipelines.
ENCODER_COMPONENTS = ("image_encoder", "feature_extractor")


@dataclass(frozen=True)
class ImageEncoder:
    model: Any  # CLIPVisionModelWithProjection, on the device
    processor: CLIPImageProcessor

    @property
    def components(self) -> dict[str, Any]:
        """Named as a pipeline names them, so the hot tier sizes it as one."""
        return dict(zip(ENCODER_COMPONENTS, (self.model, self.processor), strict=True))


@dataclass(frozen=True)
class LoadedIpAdapter:
    """One ipAdapters entry of a job: the adapter's file and its scale (its image goes to
    the pipeline call: Generation.image_prompts)."""

    path: Path
    scale: float


def load_encoder(path: Path, policy: DevicePolicy) -> ImageEncoder:
    model: Any = CLIPVisionModelWithProjection.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=policy.dtype
    )
    processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    return ImageEncoder(model.to(policy.device).eval(), processor)


@contextmanager
def applied(
    pipe: Any, encoder: ImageEncoder | None, adapters: list[LoadedIpAdapter]
) -> Iterator[None]:
    """`adapters` loaded into `pipe` (a task pipeline derived from it with from_pipe shares
    them) with `encoder`, each at its scale."""
    if not adapters:
        yield
        return
    assert encoder is not None, "the order names an image encoder with its IP-Adapters"
    before = {name: getattr(pipe, name, None) for name in ENCODER_COMPONENTS}
    processors = dict(pipe.unet.attn_processors)
    pipe.register_modules(**encoder.components)
    try:
        pipe.load_ip_adapter(
            [str(adapter.path.parent) for adapter in adapters],
            subfolder=[None] * len(adapters),
            weight_name=[adapter.path.name for adapter in adapters],
            image_encoder_folder=None,
            local_files_only=True,
        )
        pipe.set_ip_adapter_scale([adapter.scale for adapter in adapters])
        yield
    finally:
        pipe.unload_ip_adapter()
        # unload_ip_adapter sets diffusers' default processors: the policy's come back.
        pipe.unet.set_attn_processor(processors)
        pipe.register_modules(**before)
