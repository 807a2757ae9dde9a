"""What a job costs in credits: 512x512 is one credit.

ceil(width * height / 512^2) * batchSize, x2 for SDXL, +0.5 per LoRA, +1 for ControlNet
"""

import math
from decimal import Decimal

from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.model_cache import BaseModelFamily

BASE_PIXELS = 512 * 512
FAMILY_FACTOR = {BaseModelFamily.SD15: 1, BaseModelFamily.SDXL: 2}
PER_LORA = Decimal("0.5")
CONTROL_NET = Decimal(1)


def job_cost(spec: GenerationJobSpec, family: BaseModelFamily) -> Decimal:
    images = math.ceil(spec.width * spec.height / BASE_PIXELS) * spec.batch_size
    cost = Decimal(images * FAMILY_FACTOR[family])
    cost += PER_LORA * len(spec.loras or [])
    if spec.control_net is not None:
        cost += CONTROL_NET
    return cost
