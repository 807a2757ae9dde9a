"""A job's style preset, as the API applies it to price the job (credits follow the
styled size and steps): looked up where the operator looks (the tenant's namespace, then
the platform's) and applied by the same rules (diffleet_core.styles). A style that exists
nowhere, or that cannot apply, is a 422 on the job's `style` field; the operator would
fail the job at admission."""

import asyncio

from pydantic import ValidationError

from diffleet_api.errors import FieldError, invalid
from diffleet_api.kube import Body
from diffleet_api.runtime import Runtime
from diffleet_core.model_rules import lookup_namespaces
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.style_preset import StylePresetSpec
from diffleet_core.styles import apply_style, explicit_fields


async def find_preset(runtime: Runtime, namespace: str, name: str) -> Body | None:
    """A StylePreset's spec, looked up as the operator does (lookup_namespaces)."""
    for where in lookup_namespaces(namespace, runtime.platform.system_namespace):
        body = await runtime.kube.get_style_preset(where, name)
        if body is not None:
            spec: Body = body.get("spec") or {}
            return spec
    return None


async def styled_specs(
    runtime: Runtime, namespace: str, specs: list[GenerationJobSpec], field_prefix: str
) -> list[GenerationJobSpec]:
    """Each spec with its style applied (itself when it names none)."""
    names = sorted({spec.style for spec in specs if spec.style is not None})
    found = await asyncio.gather(*(find_preset(runtime, namespace, name) for name in names))
    presets = dict(zip(names, found, strict=True))
    where = f"{namespace!r} or {runtime.platform.system_namespace!r}"
    styled, errors = [], []
    for index, spec in enumerate(specs):
        field = f"{field_prefix}[{index}].style" if field_prefix else "style"
        if spec.style is None:
            styled.append(spec)
        elif (preset := presets[spec.style]) is None:
            message = f"no StylePreset {spec.style!r} in namespace {where}"
            errors.append(FieldError(field=field, rule="exists", message=message))
        else:
            try:
                # What the client set is what the GenerationJob carries (wire_spec).
                explicit = explicit_fields(spec.model_dump(by_alias=True, exclude_unset=True))
                styled.append(apply_style(spec, StylePresetSpec.model_validate(preset), explicit))
            except ValidationError as error:
                problems = "; ".join(str(problem["msg"]) for problem in error.errors())
                message = f"StylePreset {spec.style!r} cannot apply: {problems}"
                errors.append(FieldError(field=field, rule="applies", message=message))
    if errors:
        raise invalid(errors)
    return styled
