"""OpenAI's Images API over GenerationJobs: the routes, each one job
(doors.openai.generation). Errors are OpenAI's (doors.openai.errors.render)."""

from typing import Annotated, Any

from fastapi import APIRouter, File, Response

from diffleet_api.deps import Member, RuntimeDep
from diffleet_api.doors.openai import generation
from diffleet_api.doors.openai.errors import PREFIX
from diffleet_api.doors.openai.schemas import (
    OpenAIEditRequest,
    OpenAIErrorBody,
    OpenAIGenerationRequest,
    OpenAIImagesResponse,
    OpenAIVariationRequest,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorBody, "description": description}
    for status, description in (
        (400, "Invalid or unsupported parameter (`param` names it)"),
        (401, "Missing or invalid API key"),
        ("4XX", "Another client error: 403 (not allowed), 404 (not found)"),
        (429, "Rate limited, or out of credits (type insufficient_quota)"),
        (500, "The job failed or was cancelled (`job_id` names it)"),
        (504, "The job is still running (`job_id` names it; follow it at /v1/jobs)"),
    )
}

router = APIRouter(prefix=PREFIX, tags=["openai"], responses=ERRORS)


@router.post("/generations", response_model_exclude_none=True)
async def create_image(
    request: OpenAIGenerationRequest, principal: Member, runtime: RuntimeDep, response: Response
) -> OpenAIImagesResponse:
    """Generates images from a prompt (a txt2img job); the Diffleet-Job header names it."""
    return await generation.generate(runtime, principal, request, response)


@router.post("/edits", response_model_exclude_none=True)
async def create_image_edit(
    request: Annotated[OpenAIEditRequest, File()],
    principal: Member,
    runtime: RuntimeDep,
    response: Response,
) -> OpenAIImagesResponse:
    """Edits an image: an inpaint job of its transparent area (the mask's, else the
    image's own), or an img2img job of an image with none."""
    return await generation.edit(runtime, principal, request, response)


@router.post("/variations", response_model_exclude_none=True)
async def create_image_variation(
    request: Annotated[OpenAIVariationRequest, File()],
    principal: Member,
    runtime: RuntimeDep,
    response: Response,
) -> OpenAIImagesResponse:
    """A variation of an image: an img2img job with the configured prompt and strength."""
    return await generation.vary(runtime, principal, request, response)
