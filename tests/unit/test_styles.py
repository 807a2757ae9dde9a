"""Style presets applied to a job (diffleet_core.styles): the job's own fields win, the
ones it leaves out take the preset's, the prompts go through the templates, and the
operator looks a preset up in the job's namespace, then the platform's (remembered)."""

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf
import pytest
from pydantic import ValidationError

from diffleet_core.resources.generation_job import GenerationJobSpec, LoraRef, Sampler
from diffleet_core.resources.style_preset import PLACEHOLDER_RULE, StylePresetSpec
from diffleet_core.styles import apply_style, explicit_fields
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.styles import JobStyles, StyleRefused

PRESET = StylePresetSpec.model_validate(
    {
        "prompt": "film still of {prompt}, grain",
        "negativePrompt": "blurry",
        "sampler": "ddim",
        "steps": 3,
        "width": 256,
        "height": 128,
        "loras": [{"model": "film-lora", "weight": 0.5}],
    }
)


def job_spec(**fields: Any) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate({"model": "m", "prompt": "a lighthouse"} | fields)


def test_absent_fields_take_the_presets_values_and_prompts_their_templates() -> None:
    styled = apply_style(job_spec(), PRESET, explicit=())
    assert (styled.width, styled.height, styled.steps, styled.sampler) == (
        256,
        128,
        3,
        Sampler.DDIM,
    )
    assert styled.loras == [LoraRef(model="film-lora", weight=0.5)]
    assert styled.prompt == "film still of a lighthouse, grain"
    assert styled.negative_prompt == "blurry"


def test_the_jobs_own_fields_win() -> None:
    own = job_spec(width=64, steps=8, loras=[{"model": "own-lora"}], negativePrompt="fog")
    styled = apply_style(
        own, PRESET, explicit_fields(own.model_dump(by_alias=True, exclude_unset=True))
    )
    assert (styled.width, styled.height, styled.steps) == (64, 128, 8)
    assert styled.loras == [LoraRef(model="own-lora")]  # replace the preset's, not added
    assert styled.negative_prompt == "blurry, fog"


def test_the_negative_template_places_the_jobs_negative_prompt() -> None:
    preset = StylePresetSpec(negative_prompt="{prompt}, lowres")
    assert apply_style(job_spec(negativePrompt="fog"), preset, ()).negative_prompt == "fog, lowres"


def test_explicit_fields_are_those_the_object_carries() -> None:
    assert explicit_fields({"model": "m", "width": 64, "steps": None, "loras": []}) == {
        "width",
        "loras",
    }


def test_an_empty_prompt_stays_empty_and_a_preset_without_placeholder_is_refused() -> None:
    upscale = job_spec(
        prompt="", mode="upscale", model=None, initImage="s3://b-1/i.png", upscale={"model": "up"}
    )
    assert apply_style(upscale, PRESET, ("loras",)).prompt == ""
    with pytest.raises(ValidationError, match="placeholder"):
        StylePresetSpec(prompt="film still")
    assert "{prompt}" in PLACEHOLDER_RULE


def test_a_templated_prompt_over_the_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="prompt"):
        apply_style(job_spec(prompt="x" * 1990), PRESET, ())


def tracked(namespace: str, spec: Mapping[str, Any]) -> TrackedJob:
    meta = {"namespace": namespace, "name": "j", "uid": f"uid-{namespace}"}
    body = {"metadata": meta | {"creationTimestamp": "2026-01-01T00:00:00+00:00"}, "spec": spec}
    return TrackedJob.from_body(kopf.Body(body))  # type: ignore[arg-type]


def test_the_operator_looks_in_the_jobs_namespace_then_the_platforms() -> None:
    stored: dict[tuple[str, str], Mapping[str, Any]] = {
        ("team", "film"): {"spec": {"prompt": "team {prompt}"}},
        ("sys", "film"): {"spec": {"prompt": "platform {prompt}"}},
        ("sys", "ink"): {"spec": {"steps": 2}},
    }
    reads: list[tuple[str, str]] = []

    async def read(namespace: str, name: str) -> Mapping[str, Any] | None:
        reads.append((namespace, name))
        return stored.get((namespace, name))

    styles = JobStyles(read, "sys")
    own = tracked("team", {"model": "m", "prompt": "cat", "style": "film"})
    platform = tracked("other", {"model": "m", "prompt": "cat", "style": "ink", "steps": 9})
    missing = tracked("none", {"model": "m", "prompt": "cat", "style": "gone"})

    own_spec = asyncio.run(styles.resolve(own))
    assert isinstance(own_spec, GenerationJobSpec)
    assert own_spec.prompt == "team cat"
    platform_spec = asyncio.run(styles.resolve(platform))
    assert isinstance(platform_spec, GenerationJobSpec)
    assert platform_spec.steps == 9
    assert asyncio.run(styles.resolve(missing)) == StyleRefused(
        "spec.style: StylePreset 'gone' not found in 'none' or 'sys'"
    )
    assert styles.spec(own).prompt == "team cat"  # as admission styled it, without a read
    asyncio.run(styles.resolve(tracked("team", {"model": "m", "prompt": "x", "style": "film"})))
    assert reads.count(("team", "film")) == 1  # remembered
