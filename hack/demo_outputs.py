"""Downloads the images of finished GenerationJobs into a folder and prints, for each,
its path and the generation parameters read back from the PNG. Used by hack/demo.sh.

    python -m hack.demo_outputs OUT_DIR NAMESPACE JOB [JOB ...]
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import boto3
from botocore.config import Config
from PIL import Image

from diffleet_core.storage import S3Location


def job_outputs(namespace: str, job: str) -> list[str]:
    result = subprocess.run(
        ["kubectl", "get", "generationjob", job, "-n", namespace, "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [output["uri"] for output in json.loads(result.stdout)["status"]["outputs"]]


def save_and_show(path: Path, png: bytes, source: str = "") -> None:
    """Writes a PNG and prints its path, size and the parameters read back from it."""
    path.write_bytes(png)
    with Image.open(io.BytesIO(png)) as image:
        print(f"{path}  ({image.width}x{image.height}{source})")
        parameters = str(image.info.get("parameters", "(no parameters chunk)"))
    print("  " + parameters.replace("\n", "\n  "))


def main(out_dir: Path, namespace: str, jobs: list[str]) -> None:
    s3 = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=30))
    out_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        for index, uri in enumerate(job_outputs(namespace, job)):
            location = S3Location.parse(uri)
            png = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
            save_and_show(out_dir / f"{job}-{index}.png", png)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
