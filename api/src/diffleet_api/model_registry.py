"""Models a tenant can use: the platform's (ModelCaches in the system namespace) and its
own (in its namespace), and registering new ones as ModelCaches the operator verifies.

Registering from a URI: the source must be under the tenant's prefix of the models
bucket, not a pickle format, and a given sha256 must not be a model already known.
Registering by upload: the body (a .safetensors file) is streamed to S3 in parts while
its sha256 is computed; its header is checked from the first bytes (pickle refused at
once) and its length against the header at the end; a digest already known is refused
as a duplicate and the stored object deleted.
"""

import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from diffleet_api.errors import (
    ConflictError,
    FieldError,
    InvalidError,
    TooLargeError,
    invalid,
    invalid_from,
)
from diffleet_api.kube import Body
from diffleet_api.objects import s3_call
from diffleet_api.runtime import Runtime
from diffleet_api.safetensors_header import (
    LENGTH_BYTES,
    HeaderRefusedError,
    SafetensorsHeader,
    header_length,
    parse_header,
    refuse_pickle,
)
from diffleet_api.schemas import ModelList, ModelPublic, ModelRegistration
from diffleet_api.tenants import Tenant
from diffleet_core.resources.model_cache import (
    BaseModelFamily,
    ModelCacheSpec,
    ModelFormat,
    ModelType,
)
from diffleet_core.storage import PICKLE_SUFFIXES, S3Location, is_pickle

PART_BYTES = 8 * 1024 * 1024
"""S3 multipart part size (S3's minimum is 5 MiB, except for the last part)."""


def model_prefix(runtime: Runtime, namespace: str) -> str:
    return f"s3://{runtime.platform.buckets.models}/{namespace}/"


async def list_models(runtime: Runtime, tenant: Tenant) -> ModelList:
    system = runtime.platform.system_namespace
    found = [
        ModelPublic.from_resource(body, system)
        for namespace in (system, tenant.namespace)
        for body in await runtime.kube.list_models(namespace)
    ]
    return ModelList(items=found)


def source_errors(runtime: Runtime, tenant: Tenant, spec: ModelCacheSpec) -> list[FieldError]:
    prefix = model_prefix(runtime, tenant.namespace)
    errors = []
    # The spec's pattern has refused empty, "." and ".." segments: a prefix is a prefix.
    if not spec.source.startswith(prefix):
        errors.append(
            FieldError(
                field="source",
                rule="tenantScope",
                message=f"source must be under {prefix} (the tenant's prefix of the models"
                " bucket; POST /v1/models:upload stores files there)",
            )
        )
    key = S3Location.parse(spec.source).key
    if is_pickle(key):
        errors.append(
            FieldError(
                field="source",
                rule="safetensors",
                message=f"{key} is a pickle format ({', '.join(PICKLE_SUFFIXES)}): it runs"
                " code when loaded; only safetensors are accepted",
            )
        )
    elif spec.format == ModelFormat.SAFETENSORS and not key.endswith(".safetensors"):
        errors.append(
            FieldError(
                field="source",
                rule="safetensors",
                message="format safetensors needs a source ending in .safetensors",
            )
        )
    return errors


async def known_digest(runtime: Runtime, tenant: Tenant, digest: str) -> Body | None:
    """A ModelCache of the platform or the tenant with this sha256, if there is one."""
    for namespace in (runtime.platform.system_namespace, tenant.namespace):
        for body in await runtime.kube.list_models(namespace):
            status = body.get("status") or {}
            if digest in (body["spec"].get("sha256"), status.get("digest")):
                return body
    return None


def duplicate(body: Body, digest: str) -> ConflictError:
    meta = body["metadata"]
    return ConflictError(
        f"a model with sha256 {digest} is already registered:"
        f" {meta['name']!r} in namespace {meta['namespace']!r}"
    )


async def register_from_uri(
    runtime: Runtime, tenant: Tenant, registration: ModelRegistration
) -> ModelPublic:
    spec = ModelCacheSpec.model_validate(registration.model_dump(exclude={"name"}))
    errors = source_errors(runtime, tenant, spec)
    if errors:
        raise invalid(errors)
    if spec.sha256:
        existing = await known_digest(runtime, tenant, spec.sha256)
        if existing is not None:
            raise duplicate(existing, spec.sha256)
    return await create(runtime, tenant, registration.name, spec)


async def create(runtime: Runtime, tenant: Tenant, name: str, spec: ModelCacheSpec) -> ModelPublic:
    wire: Body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    body = await runtime.kube.create_model(tenant.namespace, name, wire)
    runtime.models.forget(tenant.namespace, name)
    return ModelPublic.from_resource(body, runtime.platform.system_namespace)


@dataclass(frozen=True)
class UploadRequest:
    name: str
    base_model: BaseModelFamily | None
    type: ModelType
    vram_gib: float

    def spec(self, source: str) -> ModelCacheSpec:
        """The ModelCache spec of the upload (its digest and size come once it is stored);
        one that breaks a rule of the spec (a baseModel for an upscaler, a safety model,
        which is a folder) is 422 before any byte is read."""
        try:
            return ModelCacheSpec(
                source=source,
                format=ModelFormat.SAFETENSORS,
                type=self.type,
                base_model=self.base_model,
                vram_gib=self.vram_gib,
            )
        except ValidationError as error:
            raise invalid_from(error) from error


@dataclass(frozen=True)
class Streamed:
    digest: str
    size: int
    header: SafetensorsHeader


def refused(error: HeaderRefusedError) -> InvalidError:
    rule = "notPickle" if error.pickle else "safetensors"
    return InvalidError(
        error.message, errors=[FieldError(field="body", rule=rule, message=error.message)]
    )


class ModelStream:
    """Feeds an upload's bytes to an S3 multipart upload, hashing and checking them."""

    def __init__(self, runtime: Runtime, bucket: str, key: str, limit: int) -> None:
        self.runtime = runtime
        self.bucket = bucket
        self.key = key
        self.limit = limit
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.header: SafetensorsHeader | None = None
        self.pending = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.upload_id = ""

    async def run(self, chunks: AsyncIterator[bytes]) -> Streamed:
        created = await s3_call(
            f"start {self.key}",
            self.runtime.s3.create_multipart_upload,
            Bucket=self.bucket,
            Key=self.key,
            ContentType="application/octet-stream",
        )
        self.upload_id = created["UploadId"]
        try:
            async for chunk in chunks:
                await self.feed(chunk)
            header = self.finish_checks()
            await self.send_part()
            await s3_call(
                f"complete {self.key}",
                self.runtime.s3.complete_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        except BaseException:
            await s3_call(
                f"abort {self.key}",
                self.runtime.s3.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
            )
            raise
        return Streamed(self.hash.hexdigest(), self.size, header)

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLargeError(f"the model is over {self.limit} bytes")
        self.hash.update(chunk)
        self.check_head(chunk)
        if self.header is not None and self.size > self.header.file_bytes:
            raise refused(
                HeaderRefusedError(
                    f"bytes after the last tensor: the header accounts for"
                    f" {self.header.file_bytes} bytes"
                )
            )
        self.pending += chunk
        if len(self.pending) >= PART_BYTES:
            await self.send_part()

    def check_head(self, chunk: bytes) -> None:
        """Parses the header as soon as its bytes are in (pickle refused from byte 2)."""
        if self.header is not None:
            return
        self.head += chunk
        try:
            if len(self.head) >= LENGTH_BYTES:
                wanted = LENGTH_BYTES + header_length(self.head)
                if len(self.head) >= wanted:
                    self.header = parse_header(self.head)
                    self.head = b""
                    if self.header.file_bytes > self.limit:
                        raise TooLargeError(
                            f"the header accounts for {self.header.file_bytes} bytes;"
                            f" at most {self.limit}"
                        )
            else:
                refuse_pickle(self.head)
        except HeaderRefusedError as error:
            raise refused(error) from error

    def finish_checks(self) -> SafetensorsHeader:
        try:
            if self.header is None:
                parse_header(self.head)
        except HeaderRefusedError as error:
            raise refused(error) from error
        assert self.header is not None
        if self.size != self.header.file_bytes:
            raise refused(
                HeaderRefusedError(
                    f"the file is {self.size} bytes; its header accounts for"
                    f" {self.header.file_bytes}"
                )
            )
        return self.header

    async def send_part(self) -> None:
        if not self.pending and self.parts:
            return
        number = len(self.parts) + 1
        sent = await s3_call(
            f"store part {number} of {self.key}",
            self.runtime.s3.upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=bytes(self.pending),
        )
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        self.pending = bytearray()


async def register_upload(
    runtime: Runtime,
    tenant: Tenant,
    wanted: UploadRequest,
    chunks: AsyncIterator[bytes],
    declared: str | None,
) -> ModelPublic:
    limit = runtime.settings.model_upload_max_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"the model is {declared} bytes; at most {limit}")
    if await runtime.kube.get_model(tenant.namespace, wanted.name) is not None:
        raise ConflictError(f"model {wanted.name!r} already exists")
    bucket = runtime.platform.buckets.models
    key = f"{tenant.namespace}/{wanted.name}/{secrets.token_hex(8)}.safetensors"
    spec = wanted.spec(f"s3://{bucket}/{key}")
    streamed = await ModelStream(runtime, bucket, key, limit).run(chunks)
    try:
        existing = await known_digest(runtime, tenant, streamed.digest)
        if existing is not None:
            raise duplicate(existing, streamed.digest)
        stored = spec.model_copy(update={"sha256": streamed.digest, "size_bytes": streamed.size})
        return await create(runtime, tenant, wanted.name, stored)
    except BaseException:
        await s3_call(f"delete {key}", runtime.s3.delete_object, Bucket=bucket, Key=key)
        raise
