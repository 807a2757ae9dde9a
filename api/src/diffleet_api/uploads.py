"""Uploaded images (init, mask, control and image-prompt images) and which image URIs a
tenant may use.

An upload is read up to the byte limit, cleaned (`images.sanitize`: sniffed, bounded,
re-encoded without metadata) and stored content-addressed under the tenant's prefix of
the uploads bucket: `s3://<uploads>/<namespace>/<sha256>.<ext>`. A job may only name
images under its tenant's prefixes (its uploads and its own outputs): the worker reads
them with the platform's credentials, so anything else would read another tenant's data.
"""

import asyncio
import hashlib
from collections.abc import AsyncIterator

from fastapi import Request

from diffleet_api.errors import FieldError, InvalidError, TooLargeError, UnsupportedMediaError
from diffleet_api.images import CleanImage, ImageFormat, ImageRefusedError, RefusalKind, sanitize
from diffleet_api.objects import s3_call
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import UploadPublic
from diffleet_api.tenants import Tenant
from diffleet_core.model_rules import control_field
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.settings import Settings
from diffleet_core.storage import tenant_prefix

EXTENSIONS = {ImageFormat.PNG: "png", ImageFormat.JPEG: "jpg", ImageFormat.WEBP: "webp"}


def upload_key(namespace: str, digest: str, image_format: ImageFormat) -> str:
    return f"{tenant_prefix(namespace)}{digest}.{EXTENSIONS[image_format]}"


def image_prefixes(platform: Settings, namespace: str) -> tuple[str, ...]:
    """The URI prefixes a tenant's jobs may read images from."""
    return (
        f"s3://{platform.buckets.uploads}/{tenant_prefix(namespace)}",
        f"s3://{platform.buckets.outputs}/{tenant_prefix(namespace)}",
    )


def foreign_images(
    specs: list[GenerationJobSpec], platform: Settings, namespace: str, field_prefix: str
) -> list[FieldError]:
    """An error for each image URI of `specs` outside the tenant's prefixes."""
    allowed = image_prefixes(platform, namespace)
    errors = []
    for index, spec in enumerate(specs):
        where = f"{field_prefix}[{index}]." if field_prefix else ""
        images = {"initImage": spec.init_image, "maskImage": spec.mask_image}
        images |= {
            f"{control_field(spec, entry)}.image": control.image
            for entry, control in enumerate(spec.controls)
        }
        images |= {
            f"ipAdapters[{entry}].image": adapter.image
            for entry, adapter in enumerate(spec.ip_adapters or [])
        }
        errors += [
            FieldError(
                field=f"{where}{field}",
                rule="tenantScope",
                message=f"{field} must be an upload of this tenant (POST /v1/uploads) or one"
                f" of its outputs: a URI under {' or '.join(allowed)}",
            )
            for field, uri in images.items()
            if uri is not None and not uri.startswith(allowed)
        ]
    return errors


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to exceed `limit` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"the body is {declared} bytes; at most {limit}")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise TooLargeError(f"the body is over {limit} bytes")
    return bytes(body)


def cleaned(data: bytes, max_pixels: int, field: str = "body") -> CleanImage:
    """The image sanitized; refused with 415, 413 or 422 naming `field` (where it came)."""
    if not data:
        raise InvalidError(
            f"{field} is empty",
            errors=[FieldError(field=field, rule="minLength", message="send the image bytes")],
        )
    try:
        return sanitize(data, max_pixels)
    except ImageRefusedError as refused:
        if refused.kind == RefusalKind.UNSUPPORTED:
            raise UnsupportedMediaError(refused.message) from refused
        if refused.kind == RefusalKind.TOO_LARGE:
            raise TooLargeError(refused.message) from refused
        raise InvalidError(
            refused.message,
            errors=[FieldError(field=field, rule="image", message=refused.message)],
        ) from refused


async def store_upload(runtime: Runtime, tenant: Tenant, request: Request) -> UploadPublic:
    data = await read_limited(
        request.stream(), request.headers.get("content-length"), runtime.settings.upload_max_bytes
    )
    return await store_image(runtime, tenant, data)


async def store_image(
    runtime: Runtime, tenant: Tenant, data: bytes, field: str = "body"
) -> UploadPublic:
    """Cleans the image's bytes (refused as `cleaned` says) and stores them as an upload of
    the tenant: what POST /v1/uploads does with its body, and a door with the images a
    request carries."""
    max_pixels = runtime.settings.tier_limits[tenant.tier].upload_max_pixels
    image = await asyncio.to_thread(cleaned, data, max_pixels, field)
    digest = hashlib.sha256(image.data).hexdigest()
    bucket = runtime.platform.buckets.uploads
    key = upload_key(tenant.namespace, digest, image.format)
    await s3_call(
        f"store {key}",
        runtime.s3.put_object,
        Bucket=bucket,
        Key=key,
        Body=image.data,
        ContentType=image.format.content_type,
    )
    return UploadPublic(
        uri=f"s3://{bucket}/{key}",
        sha256=digest,
        format=image.format.value,
        width=image.width,
        height=image.height,
        size_bytes=len(image.data),
    )
