"""The Automatic1111 web UI API (`/sdapi/v1`): txt2img and img2img as GenerationJobs,
and what its clients read around them (models, samplers, options, progress, interrupt,
scripts). Auth: the API key as a Bearer token or as HTTP Basic auth's password. Errors
in A1111's shape (doors.a1111.errors.render)."""

from typing import Annotated, Any

from fastapi import APIRouter, Body

from diffleet_api.deps import BasicMember, BasicViewer, RuntimeDep
from diffleet_api.doors.a1111 import checkpoints, generation, running, sampling
from diffleet_api.doors.a1111.schemas import (
    A1111ErrorBody,
    A1111ImageAnswer,
    A1111Img2ImgRequest,
    A1111Options,
    A1111Progress,
    A1111Sampler,
    A1111Scheduler,
    A1111Scripts,
    A1111SdModel,
    A1111Txt2ImgRequest,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": A1111ErrorBody, "description": description}
    for status, description in (
        (400, "Malformed request (a body that is not JSON)"),
        (401, "Missing or invalid credentials"),
        (402, "Insufficient credits"),
        (403, "Not allowed"),
        (404, "Not found"),
        (413, "An image over the size limits"),
        (415, "An image of a format not accepted (PNG, JPEG, WebP)"),
        (422, "Invalid request, or a field asking for what is not supported"),
        (429, "Too many requests"),
        (500, "The job failed"),
        (503, "A backing service is unavailable"),
        (504, "The job did not finish within the wait: follow it at /v1/jobs/{id}"),
    )
}

router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"], responses=ERRORS)


@router.post("/txt2img")
async def txt2img(
    request: A1111Txt2ImgRequest, principal: BasicMember, runtime: RuntimeDep
) -> A1111ImageAnswer:
    """A txt2img job, answered once it has finished (bounded by the door's wait)."""
    return await generation.txt2img(runtime, principal, request)


@router.post("/img2img")
async def img2img(
    request: A1111Img2ImgRequest, principal: BasicMember, runtime: RuntimeDep
) -> A1111ImageAnswer:
    """An img2img job, or an inpaint job with `mask`, answered once it has finished."""
    return await generation.img2img(runtime, principal, request)


@router.get("/sd-models")
async def sd_models(principal: BasicViewer, runtime: RuntimeDep) -> list[A1111SdModel]:
    """The checkpoints the tenant sees (its own and the platform's)."""
    return await checkpoints.checkpoints(runtime, principal)


@router.get("/samplers")
async def samplers(_: BasicViewer) -> list[A1111Sampler]:
    return sampling.samplers()


@router.get("/schedulers")
async def schedulers(_: BasicViewer) -> list[A1111Scheduler]:
    return sampling.schedulers()


@router.get("/options")
async def get_options(principal: BasicViewer, runtime: RuntimeDep) -> A1111Options:
    """The caller's default checkpoint (POST options), else the platform's."""
    return await checkpoints.options(runtime, principal)


@router.post("/options")
async def set_options(
    options: Annotated[dict[str, Any], Body()], principal: BasicMember, runtime: RuntimeDep
) -> dict[str, Any]:
    """Sets the caller's default checkpoint: `{"sd_model_checkpoint": name or title}`."""
    await checkpoints.update_options(runtime, principal, options)
    return {}


@router.get("/progress")
async def progress(principal: BasicViewer, runtime: RuntimeDep) -> A1111Progress:
    """The caller's running job: its steps and its latest live preview."""
    return await running.progress(runtime, principal)


@router.post("/interrupt")
async def interrupt(principal: BasicMember, runtime: RuntimeDep) -> dict[str, Any]:
    """Cancels the caller's unfinished jobs through this door."""
    await running.interrupt(runtime, principal)
    return {}


@router.get("/scripts")
async def scripts(_: BasicViewer) -> A1111Scripts:
    """No scripts (webuiapi asks at start)."""
    return A1111Scripts()
