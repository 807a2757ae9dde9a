"""txt2img and img2img: the request checked and translated, its images stored as the
tenant's uploads, the job submitted as `POST /v1/jobs` submits it, waited for, and
answered A1111's way."""

import asyncio
import json

from diffleet_api import submission
from diffleet_api.deps import Principal
from diffleet_api.doors.a1111 import DOOR
from diffleet_api.doors.a1111.answers import base64_text, echoed, info_of, infotext
from diffleet_api.doors.a1111.checkpoints import default_checkpoint, requested_checkpoint
from diffleet_api.doors.a1111.errors import JobFailedError, JobStillRunningError, renamed
from diffleet_api.doors.a1111.images import InpaintingFill, decoded, inpaint_inputs
from diffleet_api.doors.a1111.schemas import (
    A1111GenerationRequest,
    A1111ImageAnswer,
    A1111Img2ImgRequest,
    A1111Txt2ImgRequest,
)
from diffleet_api.doors.a1111.translation import img2img_spec, txt2img_spec
from diffleet_api.doors.jobs import StillRunningError, door_tags, finished, output_images
from diffleet_api.errors import InvalidError, TooLargeError
from diffleet_api.job_styles import styled_specs
from diffleet_api.runtime import Runtime
from diffleet_api.uploads import cleaned, store_image
from diffleet_core.resources.generation_job import GenerationJobSpec, JobPhase

# An img2img request is checked before its images are stored: these stand for them.
PLACEHOLDER_URI = "s3://placeholder/image.png"


async def model_of(
    runtime: Runtime, principal: Principal, request: A1111GenerationRequest
) -> str | None:
    return requested_checkpoint(request) or await default_checkpoint(runtime, principal)


async def txt2img(
    runtime: Runtime, principal: Principal, request: A1111Txt2ImgRequest
) -> A1111ImageAnswer:
    spec = txt2img_spec(request, await model_of(runtime, principal, request))
    return await generated(runtime, principal, spec, request)


async def img2img(
    runtime: Runtime, principal: Principal, request: A1111Img2ImgRequest
) -> A1111ImageAnswer:
    model = await model_of(runtime, principal, request)
    # The request checked before its images are stored (their URIs are placeholders).
    img2img_spec(request, model, PLACEHOLDER_URI, PLACEHOLDER_URI if request.mask else None)
    init, mask = await stored_images(runtime, principal, request)
    spec = img2img_spec(request, model, init, mask)
    return await generated(runtime, principal, spec, request)


def image_bytes(runtime: Runtime, text: str, field: str) -> bytes:
    data = decoded(text, field)
    if len(data) > runtime.settings.upload_max_bytes:
        raise TooLargeError(f"{field} is over {runtime.settings.upload_max_bytes} bytes")
    return data


async def stored_images(
    runtime: Runtime, principal: Principal, request: A1111Img2ImgRequest
) -> tuple[str, str | None]:
    """The init image (and mask) stored as the tenant's uploads: URIs for the spec. With
    a mask, both are prepared first (images.inpaint_inputs)."""
    tenant = principal.tenant
    init = image_bytes(runtime, request.init_images[0], "init_images")
    if request.mask is None:
        return (await store_image(runtime, tenant, init, "init_images")).uri, None
    mask = image_bytes(runtime, request.mask, "mask")
    max_pixels = runtime.settings.tier_limits[tenant.tier].upload_max_pixels
    clean_init = await asyncio.to_thread(cleaned, init, max_pixels, "init_images")
    clean_mask = await asyncio.to_thread(cleaned, mask, max_pixels, "mask")
    painted, blurred = await asyncio.to_thread(
        inpaint_inputs,
        clean_init.data,
        clean_mask.data,
        blur=request.mask_blur,
        invert=request.inpainting_mask_invert == 1,
        fill=InpaintingFill(request.inpainting_fill),
        seed=max(request.seed, 0),
    )
    init_upload = await store_image(runtime, tenant, painted, "init_images")
    mask_upload = await store_image(runtime, tenant, blurred, "mask")
    return init_upload.uri, mask_upload.uri


async def generated(
    runtime: Runtime,
    principal: Principal,
    spec: GenerationJobSpec,
    request: A1111GenerationRequest,
) -> A1111ImageAnswer:
    """Submits the job as POST /v1/jobs does, waits for it, and answers A1111's way."""
    try:
        done = await submission.submit(
            runtime, principal, [spec], None, None, tags=door_tags(DOOR, principal)
        )
    except InvalidError as error:
        raise renamed(error) from error
    try:
        job = await finished(runtime, principal, done.jobs[0])
    except StillRunningError as waiting:
        raise JobStillRunningError(
            f"job {waiting.job.id!r} has not finished within the door's wait; follow it at"
            f" /v1/jobs/{waiting.job.id}",
            headers={"Location": f"/v1/jobs/{waiting.job.id}"},
        ) from waiting
    if job.status.phase == JobPhase.FAILED:
        raise JobFailedError(
            f"job {job.id!r} failed: {job.status.reason}: {job.status.message}",
            headers={"Location": f"/v1/jobs/{job.id}"},
        )
    images = await output_images(runtime, job) if job.status.phase == JobPhase.SUCCEEDED else []
    infotexts = [await asyncio.to_thread(infotext, data) for data in images]
    ran = spec
    if spec.style is not None:
        [ran] = await styled_specs(runtime, principal.tenant.namespace, [spec], "")
    info = info_of(job, ran, request, infotexts)
    encoded = [base64_text(data) for data in images] if request.send_images else []
    return A1111ImageAnswer(images=encoded, parameters=echoed(request), info=json.dumps(info))
