"""Models: the platform's and the tenant's own ModelCaches, and registering new ones."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status

from diffleet_api import model_registry, ratelimits
from diffleet_api.deps import Member, RuntimeDep, Viewer
from diffleet_api.errors import PROBLEM_RESPONSES
from diffleet_api.routers.uploads import UPLOAD_ERRORS
from diffleet_api.schemas import ModelList, ModelPublic, ModelRegistrationBody
from diffleet_core.resources.generation_job import ModelName
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType

router = APIRouter(prefix="/v1/models", tags=["models"], responses=PROBLEM_RESPONSES)

CONFLICT: dict[int | str, dict[str, Any]] = {
    409: PROBLEM_RESPONSES[422] | {"description": "Name or sha256 already registered"}
}
SAFETENSORS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A .safetensors file (pickle formats are refused)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get("")
async def list_models(principal: Viewer, runtime: RuntimeDep) -> ModelList:
    """The platform's models (`platform: true`) and the tenant's own."""
    return await model_registry.list_models(runtime, principal.tenant)


@router.post("", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def register_model(
    registration: ModelRegistrationBody, principal: Member, runtime: RuntimeDep
) -> ModelPublic:
    """Registers an artifact already in S3, under the tenant's prefix of the models bucket,
    as a ModelCache; the operator then verifies it (phase Verifying, then Ready)."""
    return await model_registry.register_from_uri(runtime, principal.tenant, registration)


@router.post(
    ":upload",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=SAFETENSORS_BODY,
    responses=CONFLICT | UPLOAD_ERRORS,
)
async def upload_model(
    request: Request,
    principal: Member,
    runtime: RuntimeDep,
    name: Annotated[ModelName, Query()],
    base_model: Annotated[
        BaseModelFamily | None,
        Query(alias="baseModel", description="Required for the types of a family, not others"),
    ] = None,
    model_type: Annotated[ModelType, Query(alias="type")] = ModelType.CHECKPOINT,
    vram_gib: Annotated[float, Query(alias="vramGiB", ge=0, le=1024)] = 4.0,
) -> ModelPublic:
    """Uploads a .safetensors file (streamed; sha256 computed, header checked, a known
    digest refused as a duplicate) and registers it as a ModelCache named `name`."""
    tenant = principal.tenant
    await ratelimits.enforce(
        runtime.pool, tenant.id, runtime.settings.tier_limits[tenant.tier], ratelimits.UPLOADS, 1
    )
    wanted = model_registry.UploadRequest(name, base_model, model_type, vram_gib)
    return await model_registry.register_upload(
        runtime, tenant, wanted, request.stream(), request.headers.get("content-length")
    )
