"""Style presets through the real operator: a job's style is applied at admission (the
job's namespace's preset first, then the platform's), so that the order a worker gets
carries the preset's size, steps and sampler where the job set none, its own where it
did, and the prompts through the templates; a job whose preset exists nowhere fails at
admission naming spec.style; the API server refuses a preset without {prompt}."""

import asyncio
from typing import Any

from diffleet_core.resources.generation_job import Sampler
from diffleet_core.resources.style_preset import PLACEHOLDER_RULE
from tests.operator.injection import idle_worker_lease
from tests.operator.test_ordering import take_dispatched
from tests.support.platform import (
    Platform,
    job_manifest,
    register_model,
    style_preset,
    wait_for_phase,
)
from tests.support.stack import Kubectl


def job(name: str, **spec: Any) -> str:
    return job_manifest(name, model="m", **spec)


def test_a_preset_without_placeholder_is_refused(kubectl: Kubectl, namespace: str) -> None:
    result = kubectl.run(
        "apply", "-n", namespace, "-f", "-", stdin=style_preset("bad", prompt="film"), check=False
    )
    assert result.returncode != 0
    assert f'spec.prompt: Invalid value: "object": {PLACEHOLDER_RULE}' in result.stderr


def test_the_style_reaches_the_order_and_a_missing_one_fails_the_job(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    # The namespace's own preset goes before the platform's of the same name (the shipped
    # cinematic of manifests/styles, in diffleet-system: 768x432, 30 steps).
    template = {"prompt": "film still of {prompt}", "negativePrompt": "blurry", "sampler": "ddim"}
    kubectl.apply(style_preset("cinematic", **template, steps=3, width=256), namespace)
    idle_worker_lease(kubectl, namespace, "idle")
    platform.operator()
    register_model(kubectl, namespace, "m")

    kubectl.apply(job("lost", prompt="a lighthouse", style="none-such"), namespace)
    kubectl.apply(job("film", prompt="a lighthouse", style="cinematic", height=64), namespace)
    failed = wait_for_phase(kubectl, namespace, "lost", "Failed", timeout=30)
    assert (failed["reason"], failed["message"]) == (
        "InvalidSpec",
        f"spec.style: StylePreset 'none-such' not found in {namespace!r} or 'diffleet-system'",
    )
    wait_for_phase(kubectl, namespace, "film", "Scheduled", timeout=30)

    order = asyncio.run(take_dispatched(f"{namespace}.worker.idle"))
    assert order.job.name == "film"
    assert order.style == "cinematic"
    spec = order.spec
    # The namespace's preset (width, steps, sampler), not the platform's; the job's height.
    assert (spec.width, spec.height, spec.steps, spec.sampler) == (256, 64, 3, Sampler.DDIM)
    assert (spec.prompt, spec.negative_prompt) == ("film still of a lighthouse", "blurry")
