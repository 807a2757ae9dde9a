"""What a job costs in credits, one formula per feature; one credit is 512x512 pixels
generated at sd15 (sdxl pixels count twice).

    generation    ceil(width * height / 512²) * batchSize * family factor; in mode outpaint
                  only the added pixels count; nothing in mode upscale
    video         ceil(width * height / 512²) * frames * family factor * 0.5 (img2vid and
                  txt2vid, instead of generation; svd pixels count twice)
    adapters      +0.5 per LoRA, +1 per ControlNet, +0.5 per IP-Adapter, +0.1 per embedding
    hiresFix      ceil(hires pixels / 512²) * batchSize * family factor * 0.5
    upscale       ceil(upscaled pixels / 512²) * batchSize * 0.25
    restoreFaces  ceil(output pixels / 512²) * batchSize * 0.25
    removeBackground  ceil(output pixels / 512²) * batchSize * 0.1

The API reserves the total before the job runs and returns it as the job's cost.

A training (TrainingJobSpec) costs steps * (resolution / 512)² * batchSize * the step
price (a setting of the API): its images are squares of `resolution`, whatever the base
model's family.
"""

import math
from decimal import Decimal

from diffleet_core.resources.generation_job import GenerationJobSpec, Mode, hires_size
from diffleet_core.resources.model_cache import BaseModelFamily
from diffleet_core.resources.training_job import TrainingJobSpec

BASE_PIXELS = 512 * 512
FAMILY_FACTOR = {BaseModelFamily.SD15: 1, BaseModelFamily.SDXL: 2, BaseModelFamily.SVD: 2}
PER_LORA = Decimal("0.5")
PER_CONTROL_NET = Decimal(1)
PER_IP_ADAPTER = Decimal("0.5")
PER_EMBEDDING = Decimal("0.1")
VIDEO_FRAME_FACTOR = Decimal("0.5")
REMOVE_BACKGROUND_FACTOR = Decimal("0.1")
HIRES_FIX_FACTOR = Decimal("0.5")
UPSCALE_FACTOR = Decimal("0.25")
RESTORE_FACES_FACTOR = Decimal("0.25")


def units(width: int, height: int, batch_size: int) -> int:
    """512x512 units of `batch_size` images of this size, each image rounded up."""
    return math.ceil(width * height / BASE_PIXELS) * batch_size


def generation_cost(spec: GenerationJobSpec, family: BaseModelFamily | None) -> Decimal:
    if spec.mode is Mode.UPSCALE or spec.mode.is_video or family is None:
        return Decimal(0)
    width, height = spec.generated_size
    pixels = width * height
    if spec.outpaint is not None:
        pixels -= spec.width * spec.height
    return Decimal(math.ceil(pixels / BASE_PIXELS) * spec.batch_size * FAMILY_FACTOR[family])


def video_cost(spec: GenerationJobSpec, family: BaseModelFamily | None) -> Decimal:
    if spec.video is None or family is None:
        return Decimal(0)
    frames = units(spec.width, spec.height, spec.video.frames)
    return frames * FAMILY_FACTOR[family] * VIDEO_FRAME_FACTOR


def adapter_cost(spec: GenerationJobSpec) -> Decimal:
    return (
        PER_LORA * len(spec.loras or [])
        + PER_CONTROL_NET * len(spec.controls)
        + PER_IP_ADAPTER * len(spec.ip_adapters or [])
        + PER_EMBEDDING * len(spec.embeddings or [])
    )


def hires_fix_cost(spec: GenerationJobSpec, family: BaseModelFamily | None) -> Decimal:
    if spec.hires_fix is None or family is None:
        return Decimal(0)
    width, height = hires_size(spec.width, spec.height, spec.hires_fix.scale)
    return units(width, height, spec.batch_size) * FAMILY_FACTOR[family] * HIRES_FIX_FACTOR


def upscale_cost(spec: GenerationJobSpec) -> Decimal:
    if spec.upscale is None:
        return Decimal(0)
    return units(*spec.output_size, spec.batch_size) * UPSCALE_FACTOR


def restore_faces_cost(spec: GenerationJobSpec) -> Decimal:
    if spec.restore_faces is None:
        return Decimal(0)
    return units(*spec.output_size, spec.batch_size) * RESTORE_FACES_FACTOR


def remove_background_cost(spec: GenerationJobSpec) -> Decimal:
    if spec.remove_background is None:
        return Decimal(0)
    return units(*spec.output_size, spec.batch_size) * REMOVE_BACKGROUND_FACTOR


def cost_breakdown(spec: GenerationJobSpec, family: BaseModelFamily | None) -> dict[str, Decimal]:
    """The credits of each feature the job uses (the parts that cost something)."""
    parts = {
        "generation": generation_cost(spec, family),
        "video": video_cost(spec, family),
        "adapters": adapter_cost(spec),
        "hiresFix": hires_fix_cost(spec, family),
        "upscale": upscale_cost(spec),
        "restoreFaces": restore_faces_cost(spec),
        "removeBackground": remove_background_cost(spec),
    }
    return {feature: cost for feature, cost in parts.items() if cost}


def job_cost(spec: GenerationJobSpec, family: BaseModelFamily | None) -> Decimal:
    """The job's credits: `family` is its checkpoint's (None in mode upscale)."""
    return sum(cost_breakdown(spec, family).values(), Decimal(0))


def training_cost(spec: TrainingJobSpec, step_price: Decimal) -> Decimal:
    """The training's credits, to the cent (rounded up: a price is never zero by rounding)."""
    pixels = Decimal(spec.resolution * spec.resolution) / BASE_PIXELS
    cost = spec.steps * pixels * spec.batch_size * step_price
    return cost.quantize(Decimal("0.01"), rounding="ROUND_CEILING")
