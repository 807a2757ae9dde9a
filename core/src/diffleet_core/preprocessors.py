"""Which ControlNet preprocessors diffleet runs: the contract between admission (which
refuses a job whose conditioning no one can compute) and the worker (which computes it).

A ControlNet expects a conditioning image of its type (edges, a depth map, a pose...).
With `preprocess: auto` the worker makes it from the job's image: weight-free types by
image processing alone, detected types with a detector model (a ModelCache of type
detector and that controlType: the job's namespace, then diffleet-system). openpose and
softedge need detector networks the worker cannot load (no transformers model family
for them), so their jobs send an already processed image with `preprocess: none`.
"""

from collections.abc import Collection, Sequence

from diffleet_core.messages import ModelRef
from diffleet_core.model_rules import control_field
from diffleet_core.resources.generation_job import (
    ControlNetSpec,
    ControlType,
    GenerationJobSpec,
    Preprocess,
)
from diffleet_core.resources.model_cache import DETECTOR_CONTROL_TYPES

# "lineart" is the weight-free "lineart standard" (a difference of Gaussian blurs).
WEIGHT_FREE = frozenset(
    {ControlType.CANNY, ControlType.TILE, ControlType.SCRIBBLE, ControlType.LINEART}
)
DETECTED = frozenset(DETECTOR_CONTROL_TYPES)


def preprocessor_problem(where: str, control_type: ControlType, detector_found: bool) -> str | None:
    """Why the entry at `where` (controlNets[i] or controlNet) cannot be preprocessed
    automatically, or None when it can."""
    if control_type in WEIGHT_FREE:
        return None
    if control_type in DETECTED:
        if detector_found:
            return None
        return (
            f"{where}.preprocess: no {control_type.value} detector is registered (a ModelCache"
            f" of type detector with controlType {control_type.value}); register one, or send"
            " a processed image with preprocess none"
        )
    return (
        f"{where}.preprocess: no {control_type.value} preprocessor runs in diffleet; send a"
        " processed image with preprocess none"
    )


def control_type(entry: ControlNetSpec, control_net: ModelRef) -> ControlType | None:
    """The type of conditioning an entry runs with: its own `type`, else its ControlNet's
    controlType (None only for a model that is no ControlNet, which admission refuses)."""
    return entry.type or control_net.control_type


def detected_types(spec: GenerationJobSpec, control_nets: Sequence[ModelRef]) -> list[ControlType]:
    """The detected types the job's `preprocess: auto` entries need a detector for, each
    once, in entry order (`control_nets`: one per spec.controls entry)."""
    found = []
    for entry, control_net in zip(spec.controls, control_nets, strict=True):
        kind = control_type(entry, control_net)
        if entry.preprocess is Preprocess.AUTO and kind in DETECTED:
            found.append(kind)
    return list(dict.fromkeys(found))


def preprocess_problems(
    spec: GenerationJobSpec, control_nets: Sequence[ModelRef], detectors: Collection[ControlType]
) -> list[str]:
    """Why entries with `preprocess: auto` cannot be preprocessed (`detectors`: the detected
    types a detector was found for), one sentence per entry, each naming its field."""
    problems = []
    for index, (entry, control_net) in enumerate(zip(spec.controls, control_nets, strict=True)):
        kind = control_type(entry, control_net)
        if entry.preprocess is Preprocess.AUTO and kind is not None:
            where = control_field(spec, index)
            if problem := preprocessor_problem(where, kind, kind in detectors):
                problems.append(problem)
    return problems
