"""The demo's REST half, as a product client would use the API: POSTs a txt2img job,
then an upscale of its output (mode upscale, x4 with the tiny-esrgan-x4 upscaler, as
WebP); polls each job until it finishes, downloads its images from the presigned URLs
into OUT_DIR and prints their paths, sizes and parameters.

    DIFFLEET_API_URL=... DIFFLEET_API_KEY=dfl_... python -m hack.demo_api OUT_DIR NAME
"""

import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from hack.demo_outputs import save_and_show

SPEC = {
    "model": "micro-shapes",
    "prompt": "a green triangle",
    "width": 64,
    "height": 64,
    "steps": 20,
    "seed": 7,
}
FINISHED = {"Succeeded", "Failed", "Cancelled"}
PATIENCE_SECONDS = 300


def upscale_spec(image: str) -> dict[str, Any]:
    """`image` (a 64x64 output of the tenant's) four times larger, as WebP."""
    return {
        "mode": "upscale",
        "initImage": image,
        "width": 64,
        "height": 64,
        "upscale": {"model": "tiny-esrgan-x4", "scale": 4},
        "output": {"format": "webp", "quality": 90},
    }


def submit(api: httpx.Client, name: str, spec: dict[str, Any]) -> None:
    created = api.post("/v1/jobs", params={"name": name}, json=spec)
    if created.is_error:
        sys.exit(f"POST /v1/jobs?name={name} -> {created.status_code}: {created.text}")
    job = created.json()
    print(
        f"POST /v1/jobs?name={name} -> {created.status_code}, uid {job['uid']},"
        f" {job['cost']} credits"
    )


def finished(api: httpx.Client, name: str) -> dict[str, Any]:
    """The job once Succeeded; exits when it failed or is still running after the patience."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        job: dict[str, Any] = api.get(f"/v1/jobs/{name}").json()
        phase = (job.get("status") or {}).get("phase")
        if phase == "Succeeded":
            return job
        if phase in FINISHED:
            sys.exit(f"job {name} {phase}: {job['status']}")
        if time.monotonic() > deadline:
            sys.exit(f"job {name} still {phase} after {PATIENCE_SECONDS} s")
        time.sleep(0.5)


def download(api: httpx.Client, out_dir: Path, name: str, job: dict[str, Any]) -> None:
    """Saves each output under its S3 key's extension, from its presigned URL."""
    outputs = api.get(f"/v1/jobs/{name}/outputs")
    outputs.raise_for_status()
    stored = job["status"]["outputs"]
    for index, item in enumerate(outputs.json()["items"]):
        extension = Path(stored[index]["uri"]).suffix
        data = httpx.get(item["url"], timeout=30).content
        save_and_show(out_dir / f"{name}-{index}{extension}", data, ", from a presigned URL")


def main(out_dir: Path, name: str) -> None:
    headers = {"Authorization": f"Bearer {os.environ['DIFFLEET_API_KEY']}"}
    out_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=os.environ["DIFFLEET_API_URL"], headers=headers, timeout=30) as api:
        submit(api, name, SPEC)
        job = finished(api, name)
        download(api, out_dir, name, job)

        upscaled = f"{name}-x4"
        image = job["status"]["outputs"][0]["uri"]
        print(f"upscaling {image} (the tenant's own output) x4 with tiny-esrgan-x4")
        submit(api, upscaled, upscale_spec(image))
        download(api, out_dir, upscaled, finished(api, upscaled))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
