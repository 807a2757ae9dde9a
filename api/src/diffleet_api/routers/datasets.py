"""Training datasets: upload (a zip, or a list of images with their captions), list,
delete. The answer's `uri` is what a training's spec.dataset names."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from starlette.datastructures import UploadFile

from diffleet_api import dataset_uploads, ratelimits
from diffleet_api.dataset_uploads import DATASET_NAME, DatasetFile
from diffleet_api.deps import Member, RuntimeDep, Viewer
from diffleet_api.errors import PROBLEM_RESPONSES, UnsupportedMediaError
from diffleet_api.schemas import DatasetList, DatasetPublic
from diffleet_api.uploads import read_limited
from diffleet_core.datasets import DatasetLimits

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=PROBLEM_RESPONSES)

DatasetName = Annotated[
    str,
    Path(
        max_length=63,
        pattern=DATASET_NAME,
        description="The dataset's name: lowercase letters, digits and '-'",
    ),
]
ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A zip of the dataset's folder (each image with a same-name .txt"
        " caption), as the body or as the multipart field `archive`; or the multipart"
        " fields `images` (files) and `captions` (text, one per image, in the same order)",
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "archive": {"type": "string", "format": "binary"},
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "captions": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
        },
    }
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    409: PROBLEM_RESPONSES[422] | {"description": "A dataset of this name exists"},
    413: PROBLEM_RESPONSES[422] | {"description": "Too many bytes, uncompressed too"},
    415: PROBLEM_RESPONSES[422] | {"description": "Neither a zip nor multipart/form-data"},
}


@router.post(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=UPLOAD_BODY,
    responses=UPLOAD_ERRORS,
)
async def upload_dataset(
    name: DatasetName, request: Request, principal: Member, runtime: RuntimeDep
) -> DatasetPublic:
    """Checks the dataset by the training rules (every image captioned, no pickle, the
    bounds), cleans each image as an upload is cleaned, and stores it. A refusal names
    the file and the rule; nothing is stored then."""
    tenant = principal.tenant
    await ratelimits.enforce(
        runtime.pool, tenant.id, runtime.settings.tier_limits[tenant.tier], ratelimits.UPLOADS, 1
    )
    max_bytes = runtime.settings.dataset_max_bytes
    body = await read_limited(request.stream(), request.headers.get("content-length"), max_bytes)
    files, field = await request_files(request, body, max_bytes)
    return await dataset_uploads.store(runtime, tenant, name, files, field)


async def request_files(
    request: Request, body: bytes, max_bytes: int
) -> tuple[list[DatasetFile], str]:
    """The dataset's files from the body, and the field a refusal of the whole names."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limits = DatasetLimits()
    if content_type in ZIP_TYPES:
        return dataset_uploads.zip_files(body, limits, max_bytes), "archive"
    if content_type != "multipart/form-data":
        raise UnsupportedMediaError(
            f"send a zip ({ZIP_TYPES[0]}) or multipart/form-data, not {content_type or 'none'}"
        )
    form = await replayed(request, body).form(max_files=limits.max_images + 1)
    archive = form.get("archive")
    if isinstance(archive, UploadFile):
        return dataset_uploads.zip_files(await archive.read(), limits, max_bytes), "archive"
    images = [
        (upload.filename or "", await upload.read())
        for upload in form.getlist("images")
        if isinstance(upload, UploadFile)
    ]
    captions = [caption for caption in form.getlist("captions") if isinstance(caption, str)]
    return dataset_uploads.listed_files(images, captions, limits), "images"


def replayed(request: Request, body: bytes) -> Request:
    """The request again, its body read already (bounded): what form parsing reads."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


@router.get("")
async def list_datasets(principal: Viewer, runtime: RuntimeDep) -> DatasetList:
    """The tenant's datasets, by name."""
    return DatasetList(items=await dataset_uploads.list_datasets(runtime, principal.tenant))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(name: DatasetName, principal: Member, runtime: RuntimeDep) -> None:
    """Deletes the dataset's objects; trainings already running on it may fail."""
    await dataset_uploads.delete(runtime, principal.tenant, name)
