"""Writing a job's images and videos to S3 under the key scheme of diffleet_core.storage.
The key depends on the job's uid and the output's index only, so a retried job
overwrites its own objects; who made an output and when goes into object metadata,
never into the file, so identical jobs give identical files.

S3 sends user metadata as HTTP headers, which carry ASCII only, so the metadata holds
only identity that is ASCII by construction (Kubernetes names, the uid, the worker id,
an ISO 8601 time); the prompt and every other parameter, in any script, are in the
image file itself (encoding.py).

An upload outlasts an S3 outage: a put that fails for a transient cause (no connection,
a timeout, throttling, a 5xx answer) is tried again with jittered exponential backoff
for up to `patience` seconds; past that the run fails as retryable, so the operator
requeues the job (attempts + 1) instead of failing it. Other errors are final."""

import hashlib
import io
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as S3ConnectionError
from PIL import Image

from diffleet_core.messages import DispatchedJob
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobOutput, OutputFormat, VideoFormat
from diffleet_core.storage import S3Location, output_key
from diffleet_worker.runner import RunFailedError
from diffleet_worker.video import Video

logger = logging.getLogger(__name__)
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
RETRIED_CLIENT_STATUSES = {408, 429}


def upload_image(
    s3: Any,
    order: DispatchedJob,
    index: int,
    data: bytes,
    output_format: OutputFormat,
    worker: str,
    patience: float,
) -> JobOutput:
    """Puts the index-th image of the job, a file of `output_format`; raises
    RunFailedError (retryable) when S3 stays unreachable for `patience` seconds."""
    with Image.open(io.BytesIO(data)) as image:  # reads the header, not the pixels
        width, height = image.size
    location = put_output(s3, order, index, data, output_format, worker, patience)
    return JobOutput(
        uri=location.uri,
        format=output_format,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
    )


def upload_video(
    s3: Any, order: DispatchedJob, clip: Video, worker: str, patience: float
) -> JobOutput:
    """Puts the job's clip (its one output), as `upload_image` puts an image."""
    location = put_output(s3, order, 0, clip.data, clip.format, worker, patience)
    width, height = clip.size
    return JobOutput(
        uri=location.uri,
        format=clip.format,
        sha256=hashlib.sha256(clip.data).hexdigest(),
        width=width,
        height=height,
        frames=clip.frames,
        fps=clip.fps,
        duration_seconds=clip.duration_seconds,
    )


def put_output(
    s3: Any,
    order: DispatchedJob,
    index: int,
    data: bytes,
    file_format: OutputFormat | VideoFormat,
    worker: str,
    patience: float,
) -> S3Location:
    """Puts the index-th output file of the job (an image or a video); raises
    RunFailedError (retryable) when S3 stays unreachable for `patience` seconds."""
    job = order.job
    key = output_key(job.namespace, job.name, job.uid, index, file_format.extension)
    location = S3Location(order.output_bucket, key)
    metadata = {
        "namespace": job.namespace,
        "job": job.name,
        "uid": job.uid,
        "attempt": str(job.attempt),
        "worker": worker,
        "created": datetime.now(UTC).isoformat(),
    }
    deadline = time.monotonic() + patience
    backoff = FIRST_BACKOFF_SECONDS
    while True:
        try:
            s3.put_object(
                Bucket=location.bucket,
                Key=location.key,
                Body=data,
                ContentType=file_format.content_type,
                Metadata=metadata,
            )
            break
        except (BotoCoreError, ClientError) as error:
            if not transient(error):
                raise
            pause = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not a secret
            if time.monotonic() + pause > deadline:
                raise RunFailedError(
                    Reason.FAILED,
                    f"could not upload {location.uri} within {patience:.0f}s: {error}",
                    retryable=True,
                ) from error
            logger.warning("%s: %s; retrying in %.1fs", location.uri, error, pause)
            time.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    return location


def transient(error: BotoCoreError | ClientError) -> bool:
    """Whether trying again later may succeed: no answer at all, or a 408, 429 or 5xx."""
    if isinstance(error, BotoCoreError):
        return isinstance(error, S3ConnectionError | HTTPClientError)
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return status >= 500 or status in RETRIED_CLIENT_STATUSES
