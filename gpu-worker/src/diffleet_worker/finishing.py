"""The last steps of a run, after generation and post-processing: what the namespace's
policy asks of the images, then the files in S3.

  1. the output classifier (the policy's safety model), when the order names one: an
     image it flags fails the job with reason ContentRejected, and no image of the job
     is uploaded
  2. the invisible watermark, when the namespace asks for it (watermark.py)
  3. each image encoded in the spec's output format, its parameters in the file
     (encoding.py), and uploaded (outputs.py); a video job's frames encoded as one
     file of its video format instead (video.py)
"""

from typing import Any

from PIL import Image

from diffleet_core.messages import DispatchedJob
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobOutput
from diffleet_core.telemetry import tracer
from diffleet_worker import watermark
from diffleet_worker.config import WorkerSettings
from diffleet_worker.encoding import encode
from diffleet_worker.outputs import upload_image, upload_video
from diffleet_worker.runner import RunFailedError
from diffleet_worker.safety import SafetyChecker, flagged
from diffleet_worker.video import encode_video


def finish(
    order: DispatchedJob,
    images: list[Image.Image],
    parameters: list[str],
    checker: SafetyChecker | None,
    s3: Any,
    settings: WorkerSettings,
) -> list[JobOutput]:
    """The job's outputs in S3; `parameters` is each image's parameters text, `checker`
    the order's safety model loaded (None when the order names none)."""
    images = checked_and_marked(order, images, checker)
    output = order.spec.output
    with tracer.start_as_current_span("encode"):
        files = [
            encode(image, output.format, output.quality, text)
            for image, text in zip(images, parameters, strict=True)
        ]
    with tracer.start_as_current_span("upload"):
        return [
            upload_image(
                s3,
                order,
                index,
                data,
                output.format,
                settings.worker_id,
                settings.s3_patience_seconds,
            )
            for index, data in enumerate(files)
        ]


def finish_video(
    order: DispatchedJob,
    frames: list[Image.Image],
    parameters: str,
    checker: SafetyChecker | None,
    s3: Any,
    settings: WorkerSettings,
) -> JobOutput:
    """The job's video in S3, as `finish` does for images: every frame through the
    output classifier and the watermark, then one file of the spec's video format."""
    video = order.spec.video
    assert video is not None, "a rule requires video in the video modes"
    frames = checked_and_marked(order, frames, checker)
    with tracer.start_as_current_span("encode"):
        clip = encode_video(frames, video.format, video.fps, order.spec.output.quality, parameters)
    with tracer.start_as_current_span("upload"):
        return upload_video(s3, order, clip, settings.worker_id, settings.s3_patience_seconds)


def checked_and_marked(
    order: DispatchedJob, images: list[Image.Image], checker: SafetyChecker | None
) -> list[Image.Image]:
    """The images once the output classifier passed them (ContentRejected otherwise),
    watermarked when the order asks."""
    if checker is not None:
        with tracer.start_as_current_span("safety"):
            reject_flagged(order, flagged(checker, images))
    if order.watermark:
        with tracer.start_as_current_span("watermark"):
            images = [watermark.apply(image) for image in images]
    return images


def reject_flagged(order: DispatchedJob, verdicts: list[bool]) -> None:
    """Raises ContentRejected (not retried: the same seed gives the same image) when the
    classifier flagged any image, naming which."""
    rejected = [index for index, flag in enumerate(verdicts) if flag]
    if rejected:
        model = order.safety.name if order.safety is not None else "the safety model"
        indexes = ", ".join(str(index) for index in rejected)
        raise RunFailedError(
            Reason.CONTENT_REJECTED,
            f"the output classifier {model} flagged image {indexes} of {len(verdicts)};"
            " no image was uploaded",
        )
