"""Which ControlNet preprocessors diffleet runs: the contract between admission (which
refuses a job whose conditioning no one can compute) and the worker (which computes it).

A ControlNet expects a conditioning image of its type (edges, a depth map, a pose...).
With `preprocess: auto` the worker makes it from the job's image: weight-free types by
image processing alone, detected types with a detector model (a ModelCache of type
detector and that controlType: the job's namespace, then diffleet-system). openpose and
softedge need detector networks the worker cannot load (no transformers model family
for them), so their jobs send an already processed image with `preprocess: none`.
"""

from diffleet_core.resources.generation_job import ControlType
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
