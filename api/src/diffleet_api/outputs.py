"""Short-lived presigned URLs for a job's output images, and their deletion. Only keys
under the job's own prefix of the outputs bucket are signed or deleted (the status is
written by the operator, but a URL is a capability: it is checked against the key
scheme anyway)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from diffleet_api.errors import ConflictError, UnavailableError
from diffleet_api.history import record
from diffleet_api.kube import Body
from diffleet_api.objects import s3_call
from diffleet_api.retention import PurgeError, delete_prefix
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic, Output
from diffleet_api.uploads import image_prefixes
from diffleet_core.resources.generation_job import JobPhase
from diffleet_core.storage import S3Location, output_prefix


def output_locations(runtime: Runtime, job: JobPublic) -> list[S3Location]:
    """Where the Succeeded job's outputs are: each under the job's own key prefix."""
    if job.status.phase != JobPhase.SUCCEEDED:
        phase = job.status.phase.value if job.status.phase else "Pending"
        raise ConflictError(f"job {job.id!r} is {phase}: outputs exist once it has Succeeded")
    if job.outputs_deleted_at is not None:
        raise ConflictError(f"job {job.id!r}'s outputs were deleted at {job.outputs_deleted_at}")
    prefix = output_prefix(job.namespace, job.id, job.uid)
    locations = []
    for index, output in enumerate(job.status.outputs or []):
        location = S3Location.parse(output.uri)
        if location.bucket != runtime.platform.buckets.outputs or not location.key.startswith(
            prefix
        ):
            raise ConflictError(f"output {index} is not under the job's key prefix")
        locations.append(location)
    return locations


async def delete_outputs(runtime: Runtime, job: JobPublic, body: Body | None) -> int:
    """Deletes every object under the finished job's output prefix (what its status lists
    and anything an attempt left), then records when in its history row (recorded first
    from `body`, the live job, when the job watcher has not yet); how many objects went.
    Again, it deletes nothing and keeps the first time."""
    phase = job.status.phase
    if phase is None or not phase.finished:
        shown = phase.value if phase else "Pending"
        raise ConflictError(f"job {job.id!r} is {shown}: outputs may be deleted once it finished")
    prefix = output_prefix(job.namespace, job.id, job.uid)
    bucket = runtime.platform.buckets.outputs
    try:
        removed: int = await s3_call(
            "delete the job's outputs", delete_prefix, s3=runtime.s3, bucket=bucket, prefix=prefix
        )
    except PurgeError as error:
        raise UnavailableError(str(error)) from error
    async with runtime.pool.connection() as connection:
        if not await mark_deleted(connection, job.uid) and body is not None:
            await record(connection, body, phase.value, finished=True)
            await mark_deleted(connection, job.uid)
    return removed


async def mark_deleted(connection: psycopg.AsyncConnection[Any], uid: str) -> bool:
    """Whether the job has a history row, now saying its outputs are gone."""
    cursor = await connection.execute(
        "update jobs set outputs_deleted_at = coalesce(outputs_deleted_at, now()) where uid = %s",
        (uid,),
    )
    return cursor.rowcount == 1


def presigned_source(runtime: Runtime, job: JobPublic) -> str | None:
    """A presigned URL of the job's initImage when it lies under the tenant's own
    prefixes, as admission requires of every image a job reads."""
    source = job.spec.init_image if job.spec is not None else None
    if source is None or not source.startswith(image_prefixes(runtime.platform, job.namespace)):
        return None
    location = S3Location.parse(source)
    url: str = runtime.s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": location.bucket, "Key": location.key},
        ExpiresIn=runtime.settings.presign_seconds,
    )
    return url


def presigned_outputs(runtime: Runtime, job: JobPublic) -> list[Output]:
    seconds = runtime.settings.presign_seconds
    expires = datetime.now(UTC) + timedelta(seconds=seconds)
    signed = []
    locations = output_locations(runtime, job)
    for index, (output, location) in enumerate(
        zip(job.status.outputs or [], locations, strict=True)
    ):
        url = runtime.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": location.bucket, "Key": location.key},
            ExpiresIn=seconds,
        )
        signed.append(
            Output(
                index=index,
                url=url,
                expires_at=expires,
                format=output.format,
                sha256=output.sha256,
                width=output.width,
                height=output.height,
            )
        )
    return signed
