"""A1111's sampler and scheduler names (`GET samplers`, `GET schedulers`) as diffleet's
Sampler, both ways."""

from diffleet_api.doors.a1111.schemas import A1111GenerationRequest, A1111Sampler, A1111Scheduler
from diffleet_api.errors import FieldError, invalid
from diffleet_core.resources.generation_job import SAMPLER_LABELS, Sampler

DEFAULT_SAMPLER = "Euler"  # A1111's sampler_index default
SCHEDULER_SUFFIXES = {"": "", "automatic": "", "karras": " Karras"}


def sampler_of(request: A1111GenerationRequest) -> Sampler:
    """A1111's sampler name (+ its newer `scheduler`, "Karras" say) as diffleet's."""
    label = request.sampler_name or request.sampler_index or DEFAULT_SAMPLER
    suffix = SCHEDULER_SUFFIXES.get((request.scheduler or "").lower())
    if suffix is None:
        message = f"{request.scheduler!r} is not a scheduler here: Automatic or Karras"
        raise invalid([FieldError(field="scheduler", rule="enum", message=message)])
    if suffix and not label.endswith(suffix):
        label += suffix
    by_name = {name.lower(): sampler for sampler, name in SAMPLER_LABELS.items()}
    by_name |= {sampler.value: sampler for sampler in Sampler}
    found = by_name.get(label.lower())
    if found is None:
        field = "scheduler" if suffix and label.removesuffix(suffix).lower() in by_name else None
        names = ", ".join(SAMPLER_LABELS.values())
        message = f"{label!r} is not a sampler here (GET /sdapi/v1/samplers): {names}"
        raise invalid([FieldError(field=field or "sampler_name", rule="enum", message=message)])
    return found


def samplers() -> list[A1111Sampler]:
    return [
        A1111Sampler(name=label, aliases=[sampler.value])
        for sampler, label in SAMPLER_LABELS.items()
    ]


def schedulers() -> list[A1111Scheduler]:
    return [
        A1111Scheduler(name="automatic", label="Automatic"),
        A1111Scheduler(name="karras", label="Karras", default_rho=7.0),
    ]
