"""Short-lived presigned URLs for a job's output images. Only keys under the job's own
prefix of the outputs bucket are signed (the status is written by the operator, but a
URL is a capability: it is checked against the key scheme anyway)."""

from datetime import UTC, datetime, timedelta

from diffleet_api.errors import ConflictError
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic, Output
from diffleet_core.resources.generation_job import JobPhase
from diffleet_core.storage import S3Location, output_prefix


def output_locations(runtime: Runtime, job: JobPublic) -> list[S3Location]:
    """Where the Succeeded job's outputs are: each under the job's own key prefix."""
    if job.status.phase != JobPhase.SUCCEEDED:
        phase = job.status.phase.value if job.status.phase else "Pending"
        raise ConflictError(f"job {job.id!r} is {phase}: outputs exist once it has Succeeded")
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
