"""`make demo` as a new user runs it, in `make test`: `make up` installs the platform with
the chart (release `diffleet` in `diffleet-system`, its pods run by the local pod runner,
one real CPU worker), then hack/demo.sh runs the main job end to end through it (kubectl
jobs, the REST API on the port `make env` gives, an outpaint, an MP4 and an upscale). A
second `make up` with unchanged values rolls nothing."""

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.models import RegisteredModel
from tests.support.stack import ROOT, Kubectl, stack

pytestmark = pytest.mark.disruptive

SYSTEM = "diffleet-system"
DEMO = "diffleet-demo"
# The worker pod imports torch and diffusers, then six jobs run on 2 shared cores.
DEMO_TIMEOUT = 900


@pytest.fixture
def platform_up(models: dict[str, RegisteredModel]) -> Iterator[None]:
    """`make up`'s platform for the test, removed after it (the run found it stopped)."""
    try:
        up = stack("up")
        assert up.returncode == 0, up.stderr[-4000:]
        yield
    finally:
        stack("down-platform", timeout=180)


def generations(kubectl: Kubectl) -> dict[str, int]:
    deployments = kubectl.json("get", "deployments", "-n", SYSTEM)["items"]
    return {d["metadata"]["name"]: d["metadata"]["generation"] for d in deployments}


def outputs(kubectl: Kubectl, job: str) -> list[dict[str, Any]]:
    status = kubectl.json("get", "generationjob", job, "-n", DEMO)["status"]
    assert status["phase"] == "Succeeded", status
    result: list[dict[str, Any]] = status["outputs"]
    return result


def test_the_demo_runs_through_the_release_make_up_installs(
    kubectl: Kubectl, platform_up: None
) -> None:
    before = generations(kubectl)
    assert {"diffleet-operator", "diffleet-api"} <= set(before)

    demo = subprocess.run(
        [str(ROOT / "hack" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
        env=os.environ | {"KUBECONFIG": kubectl.kubeconfig},
    )
    print(demo.stdout, demo.stderr)  # what a new user sees (pytest -s)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-4000:]

    [outpainted] = outputs(kubectl, "blue-square-outpainted")
    assert (outpainted["width"], outpainted["height"]) == (128, 64)
    [clip] = outputs(kubectl, "blue-square-animated")
    assert (clip["format"], clip["frames"], clip["fps"]) == ("mp4", 8, 8)
    [drawn] = outputs(kubectl, "green-triangle")
    [upscaled] = outputs(kubectl, "green-triangle-x4")
    assert upscaled["format"] == "webp"
    assert upscaled["width"] == 4 * drawn["width"]
    for job in ("red-circle", "blue-square-repainted"):
        assert len(outputs(kubectl, job)) == 1
    assert "the web console:" in demo.stdout + demo.stderr

    again = stack("up")
    assert again.returncode == 0, again.stderr[-4000:]
    assert generations(kubectl) == before
