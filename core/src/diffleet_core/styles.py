"""Style presets applied to a job (StylePreset, diffleet_core.resources.style_preset).

The API applies a job's style to price it, the operator at admission to dispatch it: the
fields the job sets itself win, the ones it leaves out take the preset's values, and the
prompts go through the preset's templates. A preset is looked up where a job's models are
(diffleet_core.model_rules.lookup_namespaces: the job's namespace, then the platform's)."""

from collections.abc import Collection, Mapping
from typing import Any

from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.style_preset import PLACEHOLDER, StylePresetSpec

# The GenerationJob fields a preset fills when the job leaves them out (python names).
# The CRD gives them no default, so that "left out" can be told from "set" on a job.
OVERRIDABLE = frozenset({"sampler", "steps", "width", "height", "loras"})


def explicit_fields(wire_spec: Mapping[str, Any]) -> frozenset[str]:
    """The overridable fields a job's spec, as the GenerationJob carries it (camelCase),
    sets itself: present and not null."""
    fields = GenerationJobSpec.model_fields
    return frozenset(
        name for name in OVERRIDABLE if wire_spec.get(fields[name].alias or name) is not None
    )


def apply_style(
    spec: GenerationJobSpec, preset: StylePresetSpec, explicit: Collection[str]
) -> GenerationJobSpec:
    """`spec` in the style of `preset`: the overridable fields the job sets (`explicit`,
    python names) are kept, the others take the preset's values where it has one; the
    prompts go through the templates. An empty prompt (object removal, upscale) stays empty.
    Raises ValueError (a pydantic ValidationError) when the result breaks a rule of the
    spec, e.g. a templated prompt over its maximum length."""
    values = spec.model_dump(exclude_unset=True)
    for name in OVERRIDABLE - set(explicit):
        preset_value = getattr(preset, name)
        if preset_value is not None:
            values[name] = preset_value
    if preset.prompt is not None and spec.prompt:
        values["prompt"] = preset.prompt.replace(PLACEHOLDER, spec.prompt)
    if preset.negative_prompt is not None:
        values["negative_prompt"] = negative_prompt(preset.negative_prompt, spec.negative_prompt)
    return GenerationJobSpec.model_validate(values)


def negative_prompt(template: str, own: str) -> str:
    """The negative prompt of a styled job: the template with the job's own in place of
    {prompt}; without a placeholder, the job's own (if any) after the template and ", "."""
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, own)
    return f"{template}, {own}" if own else template
