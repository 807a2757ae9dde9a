"""Each Images API request as one GenerationJob: submitted as POST /v1/jobs submits it
(same auth, rate limits, credits, history and webhooks), waited for (bounded by
door_wait_seconds) and answered in OpenAI's shape."""

import asyncio
import base64

from fastapi import Response

from diffleet_api import submission
from diffleet_api.deps import Principal
from diffleet_api.doors import jobs
from diffleet_api.doors.openai import DOOR, errors, masks, translation
from diffleet_api.doors.openai.schemas import (
    OpenAIEditRequest,
    OpenAIGenerationRequest,
    OpenAIImageData,
    OpenAIImageRequest,
    OpenAIImagesResponse,
    OpenAIOutputRequest,
    OpenAIVariationRequest,
)
from diffleet_api.errors import ApiError
from diffleet_api.job_styles import styled_specs
from diffleet_api.outputs import presigned_outputs
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_api.uploads import store_image
from diffleet_core.resources.generation_job import GenerationJobSpec, JobPhase

# The answer's `quality`, as the SDK's ImagesResponse names it.
ANSWERED_QUALITIES = ("low", "medium", "high")


async def generate(
    runtime: Runtime, principal: Principal, request: OpenAIGenerationRequest, response: Response
) -> OpenAIImagesResponse:
    """A txt2img job of the prompt."""
    spec = translation.generation_spec(request, runtime.settings)
    return await run(runtime, principal, spec, request, response)


async def edit(
    runtime: Runtime, principal: Principal, request: OpenAIEditRequest, response: Response
) -> OpenAIImagesResponse:
    """An inpaint job of the transparent area (the mask's, else the image's own), or an
    img2img job of an image with none. The parameters are checked before the images are
    stored."""
    fields = translation.output_fields(request, runtime.settings)
    limit = runtime.settings.upload_max_bytes
    image_data = await masks.read_upload(masks.the_image(request), "image", limit)
    mask_data = await masks.read_upload(request.mask, "mask", limit) if request.mask else None
    max_pixels = runtime.settings.tier_limits[principal.tenant.tier].upload_max_pixels
    images = await asyncio.to_thread(masks.edit_images, image_data, mask_data, max_pixels)
    image = await store_image(runtime, principal.tenant, images.image, "image")
    mask = (
        await store_image(runtime, principal.tenant, images.mask, "mask") if images.mask else None
    )
    spec = translation.edit_spec(fields, image.uri, mask.uri if mask else None, images.size)
    return await run(runtime, principal, spec, request, response)


async def vary(
    runtime: Runtime, principal: Principal, request: OpenAIVariationRequest, response: Response
) -> OpenAIImagesResponse:
    """An img2img job of the image with the configured prompt and strength."""
    fields = translation.variation_fields(request, runtime.settings)
    data = await masks.read_upload(request.image, "image", runtime.settings.upload_max_bytes)
    max_pixels = runtime.settings.tier_limits[principal.tenant.tier].upload_max_pixels
    opened = await asyncio.to_thread(masks.opened, data, "image", max_pixels)
    image = await store_image(runtime, principal.tenant, data, "image")
    spec = translation.edit_spec(fields, image.uri, None, opened.size)
    return await run(runtime, principal, spec, request, response)


async def run(
    runtime: Runtime,
    principal: Principal,
    spec: GenerationJobSpec,
    request: OpenAIImageRequest,
    response: Response,
) -> OpenAIImagesResponse:
    """Submits the job, waits for it and answers with its images. A failure once the job
    exists names it (errors.render: and asks the SDK not to retry, which would make a
    second job)."""
    tags = jobs.door_tags(DOOR, principal, request.end_user)
    submitted = await submission.submit(runtime, principal, [spec], None, None, tags=tags)
    job = submitted.jobs[0]
    response.headers[errors.JOB_HEADER] = job.id
    try:
        return await answered(runtime, principal, job, spec, request)
    except ApiError as error:
        error.headers |= errors.job_header(job)
        raise


async def answered(
    runtime: Runtime,
    principal: Principal,
    job: JobPublic,
    spec: GenerationJobSpec,
    request: OpenAIImageRequest,
) -> OpenAIImagesResponse:
    """The job's images once it has succeeded."""
    try:
        job = await jobs.finished(runtime, principal, job)
    except jobs.StillRunningError:
        raise errors.still_running(job, runtime.settings.door_wait_seconds) from None
    if job.status.phase != JobPhase.SUCCEEDED:
        raise errors.not_succeeded(job)
    b64 = request.response_format == "b64_json"
    images = await jobs.output_images(runtime, job) if b64 else None
    urls = None if b64 else [output.url for output in presigned_outputs(runtime, job)]
    quality = request.quality if isinstance(request, OpenAIOutputRequest) else None
    revised = await revised_prompt(runtime, principal.tenant.namespace, spec)
    return answer(job, images, urls, revised, quality)


async def revised_prompt(runtime: Runtime, namespace: str, spec: GenerationJobSpec) -> str:
    """The prompt as the job's style rendered it (the prompt itself without a style)."""
    if spec.style is None:
        return spec.prompt
    [styled] = await styled_specs(runtime, namespace, [spec], "")
    return styled.prompt


def answer(
    job: JobPublic,
    images: list[bytes] | None,
    urls: list[str] | None,
    revised_prompt: str,
    quality: str | None,
) -> OpenAIImagesResponse:
    """The finished job in OpenAI's shape: b64_json when `images`, else url."""
    spec = job.spec
    assert spec is not None, "a job the door created has a spec"
    created = job.status.completed_at or job.created_at
    entries = (
        [
            OpenAIImageData(b64_json=base64.b64encode(data).decode(), revised_prompt=revised_prompt)
            for data in images
        ]
        if images is not None
        else [OpenAIImageData(url=url, revised_prompt=revised_prompt) for url in urls or []]
    )
    outputs = job.status.outputs or []
    size = f"{outputs[0].width}x{outputs[0].height}" if outputs else None
    return OpenAIImagesResponse(
        created=int(created.timestamp()),
        data=entries,
        size=size,
        quality=quality if quality in ANSWERED_QUALITIES else None,
        output_format=spec.output.format.value,
    )
