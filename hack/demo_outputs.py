"""Downloads the images and videos of finished GenerationJobs into a folder and prints,
for each, its path, size (and frames and fps of a video) and the generation parameters
read back from the file (PNG text, the EXIF UserComment of a JPEG or WebP, the comment
of a GIF or an MP4). Used by hack/demo.sh.

    python -m hack.demo_outputs OUT_DIR NAMESPACE JOB [JOB ...]
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import boto3
from botocore.config import Config
from PIL import Image

from diffleet_core.storage import S3Location
from diffleet_worker.video import read_video_parameters


def job_outputs(namespace: str, job: str) -> list[str]:
    result = subprocess.run(
        ["kubectl", "get", "generationjob", job, "-n", namespace, "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [output["uri"] for output in json.loads(result.stdout)["status"]["outputs"]]


def save_and_show(path: Path, data: bytes, source: str = "") -> None:
    """Writes an image or a video and prints its path, format, size and the parameters
    read back from it."""
    path.write_bytes(data)
    print(f"{path}  ({describe(data)}{source})")
    parameters = read_video_parameters(data) or "(no parameters)"
    print("  " + parameters.replace("\n", "\n  "))


def describe(data: bytes) -> str:
    """Format and size of an image, and frames and fps of a video or animation."""
    if data[4:8] == b"ftyp":  # an MP4
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            return (
                f"MP4 {stream.width}x{stream.height}, {stream.frames} frames"
                f" at {stream.average_rate} fps"
            )
    with Image.open(io.BytesIO(data)) as image:
        frames = getattr(image, "n_frames", 1)
        animation = f", {frames} frames" if frames > 1 else ""
        return f"{image.format} {image.width}x{image.height}{animation}"


def main(out_dir: Path, namespace: str, jobs: list[str]) -> None:
    s3 = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=30))
    out_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        for index, uri in enumerate(job_outputs(namespace, job)):
            location = S3Location.parse(uri)
            data = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
            save_and_show(out_dir / f"{job}-{index}{Path(location.key).suffix}", data)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
