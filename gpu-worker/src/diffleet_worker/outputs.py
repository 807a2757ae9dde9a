"""Writing a job's images to S3 under the key scheme of diffleet_core.storage. The key
depends on the job's uid and the image index only, so a retried job overwrites its own
objects; who made an image and when goes into object metadata, never into the image,
so identical jobs give identical files.

S3 sends user metadata as HTTP headers, which carry ASCII only, so the metadata holds
only identity that is ASCII by construction (Kubernetes names, the uid, the worker id,
an ISO 8601 time); the prompt and every other parameter, in any script, are in the
PNG's `parameters` text chunk (parameters.py)."""

import hashlib
from datetime import UTC, datetime
from typing import Any

from diffleet_core.messages import DispatchedJob
from diffleet_core.resources.generation_job import JobOutput
from diffleet_core.storage import S3Location, output_key


def upload_png(s3: Any, order: DispatchedJob, index: int, png: bytes, worker: str) -> JobOutput:
    job = order.job
    location = S3Location(order.output_bucket, output_key(job.namespace, job.name, job.uid, index))
    s3.put_object(
        Bucket=location.bucket,
        Key=location.key,
        Body=png,
        ContentType="image/png",
        Metadata={
            "namespace": job.namespace,
            "job": job.name,
            "uid": job.uid,
            "attempt": str(job.attempt),
            "worker": worker,
            "created": datetime.now(UTC).isoformat(),
        },
    )
    return JobOutput(
        uri=location.uri,
        sha256=hashlib.sha256(png).hexdigest(),
        width=order.spec.width,
        height=order.spec.height,
    )
