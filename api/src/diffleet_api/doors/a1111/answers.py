"""What A1111 answers about a finished job: `parameters` (the request echoed), `info`
(its Processed.js()), each image's infotext, and the images as base64."""

import base64
import io
from datetime import datetime
from typing import Any

from PIL import Image

from diffleet_api.doors.a1111.checkpoints import HASH_LENGTH
from diffleet_api.doors.a1111.schemas import A1111GenerationRequest, A1111Img2ImgRequest
from diffleet_api.schemas import JobPublic
from diffleet_core.resources.generation_job import (
    MAX_SEED,
    SAMPLER_LABELS,
    GenerationJobSpec,
    JobPhase,
)


def echoed(request: A1111GenerationRequest) -> dict[str, Any]:
    """The request as A1111 echoes it in `parameters`: every field, the images only with
    include_init_images."""
    parameters = request.model_dump(mode="json")
    if isinstance(request, A1111Img2ImgRequest) and not request.include_init_images:
        parameters |= {"init_images": None, "mask": None}
    return parameters


def job_timestamp(job: JobPublic) -> str:
    when: datetime = job.status.started_at or job.created_at
    return when.strftime("%Y%m%d%H%M%S")


def info_of(
    job: JobPublic,
    spec: GenerationJobSpec,
    request: A1111GenerationRequest,
    infotexts: list[str],
) -> dict[str, Any]:
    """A1111's `info` (Processed.js()) of the finished job; `spec` is the job's, its style
    applied (the prompts as the worker ran them). Also job_id (follow it at /v1/jobs)
    and interrupted (the job was cancelled: no images)."""
    count = spec.batch_size
    seed = job.status.seed
    seeds = [] if seed is None else [(seed + index) % (MAX_SEED + 1) for index in range(count)]
    subseed = request.subseed if request.subseed >= 0 else -1
    strength = spec.hires_fix.strength if spec.hires_fix is not None else spec.strength
    digest = job.status.model_digest
    return {
        "prompt": spec.prompt,
        "all_prompts": [spec.prompt] * count,
        "negative_prompt": spec.negative_prompt,
        "all_negative_prompts": [spec.negative_prompt] * count,
        "seed": seed,
        "all_seeds": seeds,
        "subseed": subseed,
        "all_subseeds": [subseed] * len(seeds),
        "subseed_strength": 0,
        "width": spec.width,
        "height": spec.height,
        "sampler_name": SAMPLER_LABELS[spec.sampler],
        "cfg_scale": spec.guidance_scale,
        "steps": spec.steps,
        "batch_size": count,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": spec.model,
        "sd_model_hash": digest[:HASH_LENGTH] if digest else None,
        "sd_vae_name": spec.vae,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": strength if strength is not None else 0,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [spec.style] if spec.style else [],
        "job_timestamp": job_timestamp(job),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": "diffleet",
        "job_id": job.id,
        "interrupted": job.status.phase == JobPhase.CANCELLED,
    }


def infotext(data: bytes) -> str:
    """An output's `parameters` text chunk (what the worker writes, in A1111's format)."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.info.get("parameters")
    return text if isinstance(text, str) else ""


def base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode()
