"""Uploads of init, mask and control images; the answer is the s3:// URI to put in a job."""

from typing import Any

from fastapi import APIRouter, Request, status

from diffleet_api import ratelimits, uploads
from diffleet_api.deps import Member, RuntimeDep
from diffleet_api.errors import PROBLEM_RESPONSES
from diffleet_api.schemas import UploadPublic

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=PROBLEM_RESPONSES)

BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image's bytes (PNG, JPEG or WebP; sniffed, Content-Type ignored)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: PROBLEM_RESPONSES[422] | {"description": "Too many bytes or pixels"},
    415: PROBLEM_RESPONSES[422] | {"description": "Not a PNG, JPEG or WebP image"},
}


@router.post(
    "", status_code=status.HTTP_201_CREATED, openapi_extra=BINARY_BODY, responses=UPLOAD_ERRORS
)
async def upload_image(request: Request, principal: Member, runtime: RuntimeDep) -> UploadPublic:
    """Stores an image for `initImage`, `maskImage` or `controlNet.image`. The content is
    sniffed, bounded in bytes and pixels, and re-encoded without metadata (EXIF gone)."""
    tenant = principal.tenant
    await ratelimits.enforce(
        runtime.pool, tenant.id, runtime.settings.tier_limits[tenant.tier], ratelimits.UPLOADS, 1
    )
    return await uploads.store_upload(runtime, tenant, request)
