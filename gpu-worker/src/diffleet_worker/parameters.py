"""The `parameters` PNG text chunk: the generation settings in the format image tools
widely read and write (prompt, then "Negative prompt: ...", then "Key: value, ...")."""

import io
from dataclasses import dataclass

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from diffleet_core.resources.generation_job import GenerationJobSpec, Mode
from diffleet_worker.samplers import LABELS

PARAMETERS_KEY = "parameters"
HASH_LENGTH = 10


@dataclass(frozen=True)
class UsedModel:
    name: str
    digest: str

    @property
    def short_hash(self) -> str:
        return self.digest[:HASH_LENGTH]


def parameters_text(
    spec: GenerationJobSpec,
    seed: int,
    strength: float | None,
    model: UsedModel,
    loras: list[tuple[UsedModel, float]],
) -> str:
    fields = {
        "Steps": str(spec.steps),
        "Sampler": LABELS[spec.sampler],
        "CFG scale": f"{spec.guidance_scale:g}",
        "Seed": str(seed),
        "Size": f"{spec.width}x{spec.height}",
        "Model hash": model.short_hash,
        "Model": model.name,
    }
    if spec.mode is not Mode.TXT2IMG and strength is not None:
        fields["Denoising strength"] = f"{strength:g}"
    if loras:
        fields["Lora hashes"] = '"' + ", ".join(f"{m.name}: {m.short_hash}" for m, _ in loras) + '"'
        fields["Lora weights"] = '"' + ", ".join(f"{m.name}: {w:g}" for m, w in loras) + '"'
    if spec.control_net is not None:
        fields["ControlNet"] = (
            f'"Module: canny, Model: {spec.control_net.model}, '
            f'Weight: {spec.control_net.conditioning_scale:g}"'
        )
    lines = [spec.prompt]
    if spec.negative_prompt:
        lines.append(f"Negative prompt: {spec.negative_prompt}")
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items()))
    return "\n".join(lines)


def encode_png(image: Image.Image, parameters: str) -> bytes:
    """PNG bytes with the parameters chunk; the same image and text give the same bytes.

    A tEXt chunk holds Latin-1 only (PNG specification), so text beyond it (emoji, CJK,
    RTL scripts, most combining marks) goes in an iTXt chunk, UTF-8; readers such as
    Pillow's `Image.info` return both kinds as the same str.
    """
    info = PngInfo()
    if _is_latin1(parameters):
        info.add_text(PARAMETERS_KEY, parameters)
    else:
        info.add_itxt(PARAMETERS_KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_parameters(png: bytes) -> str | None:
    with Image.open(io.BytesIO(png)) as image:
        text = image.info.get(PARAMETERS_KEY)
    return text if isinstance(text, str) else None


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
