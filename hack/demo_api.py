"""The demo's REST half: one job through the API, as a product client would submit it.
POSTs the spec, polls the job until it finishes, downloads its images from the
presigned URLs into OUT_DIR and prints their paths and parameters.

    DIFFLEET_API_URL=... DIFFLEET_API_KEY=dfl_... python -m hack.demo_api OUT_DIR NAME
"""

import os
import sys
import time
from pathlib import Path

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


def main(out_dir: Path, name: str) -> None:
    headers = {"Authorization": f"Bearer {os.environ['DIFFLEET_API_KEY']}"}
    with httpx.Client(base_url=os.environ["DIFFLEET_API_URL"], headers=headers, timeout=30) as api:
        created = api.post("/v1/jobs", params={"name": name}, json=SPEC)
        created.raise_for_status()
        print(f"POST /v1/jobs?name={name} -> {created.status_code}, uid {created.json()['uid']}")
        deadline = time.monotonic() + 300
        phase = None
        while phase not in FINISHED:
            if time.monotonic() > deadline:
                sys.exit(f"job {name} still {phase} after 300 s")
            time.sleep(0.5)
            phase = (api.get(f"/v1/jobs/{name}").json().get("status") or {}).get("phase")
        if phase != "Succeeded":
            sys.exit(f"job {name} {phase}: {api.get(f'/v1/jobs/{name}').json()['status']}")
        outputs = api.get(f"/v1/jobs/{name}/outputs")
        outputs.raise_for_status()
        out_dir.mkdir(parents=True, exist_ok=True)
        for index, item in enumerate(outputs.json()["items"]):
            png = httpx.get(item["url"], timeout=30).content
            save_and_show(out_dir / f"{name}-{index}.png", png, ", from a presigned URL")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
