"""OpenAI's Images API over GenerationJobs: each request is one job, submitted as POST
/v1/jobs submits (same auth, rate limits, credits, history and webhooks), waited for
(bounded by door_wait_seconds) and answered in OpenAI's shape. Errors are OpenAI's
(doors.openai.render)."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Response

from diffleet_api import submission
from diffleet_api.deps import Member, Principal, RuntimeDep
from diffleet_api.doors import jobs
from diffleet_api.doors import openai as door
from diffleet_api.errors import ApiError
from diffleet_api.job_styles import styled_specs
from diffleet_api.outputs import presigned_outputs
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_api.uploads import store_image
from diffleet_core.resources.generation_job import GenerationJobSpec, JobPhase

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": door.ErrorBody, "description": description}
    for status, description in (
        (400, "Invalid or unsupported parameter (`param` names it)"),
        (401, "Missing or invalid API key"),
        ("4XX", "Another client error: 403 (not allowed), 404 (not found)"),
        (429, "Rate limited, or out of credits (type insufficient_quota)"),
        (500, "The job failed or was cancelled (`job_id` names it)"),
        (504, "The job is still running (`job_id` names it; follow it at /v1/jobs)"),
    )
}

router = APIRouter(prefix=door.PREFIX, tags=["openai"], responses=ERRORS)


@router.post("/generations", response_model_exclude_none=True)
async def create_image(
    request: door.GenerationRequest, principal: Member, runtime: RuntimeDep, response: Response
) -> door.ImagesResponse:
    """Generates images from a prompt (a txt2img job); the Diffleet-Job header names it."""
    spec = door.generation_spec(request, runtime.settings)
    return await run(runtime, principal, spec, request, response)


@router.post("/edits", response_model_exclude_none=True)
async def create_image_edit(
    request: Annotated[door.EditRequest, File()],
    principal: Member,
    runtime: RuntimeDep,
    response: Response,
) -> door.ImagesResponse:
    """Edits an image: an inpaint job of its transparent area (the mask's, else the
    image's own), or an img2img job of an image with none."""
    fields = door.output_fields(request, runtime.settings)
    limit = runtime.settings.upload_max_bytes
    image_data = await door.read_upload(request.the_image(), "image", limit)
    mask_data = await door.read_upload(request.mask, "mask", limit) if request.mask else None
    max_pixels = runtime.settings.tier_limits[principal.tenant.tier].upload_max_pixels
    images = await asyncio.to_thread(door.edit_images, image_data, mask_data, max_pixels)
    image = await store_image(runtime, principal.tenant, images.image, "image")
    mask = (
        await store_image(runtime, principal.tenant, images.mask, "mask") if images.mask else None
    )
    spec = door.edit_spec(fields, image.uri, mask.uri if mask else None, images.size)
    return await run(runtime, principal, spec, request, response)


@router.post("/variations", response_model_exclude_none=True)
async def create_image_variation(
    request: Annotated[door.VariationRequest, File()],
    principal: Member,
    runtime: RuntimeDep,
    response: Response,
) -> door.ImagesResponse:
    """A variation of an image: an img2img job with the configured prompt and strength."""
    fields = door.variation_fields(request, runtime.settings)
    data = await door.read_upload(request.image, "image", runtime.settings.upload_max_bytes)
    max_pixels = runtime.settings.tier_limits[principal.tenant.tier].upload_max_pixels
    opened = await asyncio.to_thread(door.opened, data, "image", max_pixels)
    image = await store_image(runtime, principal.tenant, data, "image")
    spec = door.edit_spec(fields, image.uri, None, opened.size)
    return await run(runtime, principal, spec, request, response)


async def run(
    runtime: Runtime,
    principal: Principal,
    spec: GenerationJobSpec,
    request: door.ImageRequest,
    response: Response,
) -> door.ImagesResponse:
    """Submits the job, waits for it and answers with its images. A failure once the job
    exists names it (door.render: and asks the SDK not to retry, which would make a
    second job)."""
    tags = jobs.door_tags(door.DOOR, principal, request.end_user)
    submitted = await submission.submit(runtime, principal, [spec], None, None, tags=tags)
    job = submitted.jobs[0]
    response.headers[door.JOB_HEADER] = job.id
    try:
        return await answered(runtime, principal, job, spec, request)
    except ApiError as error:
        error.headers |= door.job_header(job)
        raise


async def answered(
    runtime: Runtime,
    principal: Principal,
    job: JobPublic,
    spec: GenerationJobSpec,
    request: door.ImageRequest,
) -> door.ImagesResponse:
    """The job's images once it has succeeded."""
    try:
        job = await jobs.finished(runtime, principal, job)
    except jobs.StillRunningError:
        raise door.still_running(job, runtime.settings.door_wait_seconds) from None
    if job.status.phase != JobPhase.SUCCEEDED:
        raise door.not_succeeded(job)
    b64 = request.response_format == "b64_json"
    images = await jobs.output_images(runtime, job) if b64 else None
    urls = None if b64 else [output.url for output in presigned_outputs(runtime, job)]
    quality = request.quality if isinstance(request, door.OutputRequest) else None
    revised = await revised_prompt(runtime, principal.tenant.namespace, spec)
    return door.answer(job, images, urls, revised, quality)


async def revised_prompt(runtime: Runtime, namespace: str, spec: GenerationJobSpec) -> str:
    """The prompt as the job's style rendered it (the prompt itself without a style)."""
    if spec.style is None:
        return spec.prompt
    [styled] = await styled_specs(runtime, namespace, [spec], "")
    return styled.prompt
