"""The dispatch pause: a ConfigMap in the operator's fleet namespace whose `data.paused`
is "true" stops the operator dispatching new jobs (they stay Queued; jobs already
dispatched run on and their results are recorded). `diffleet-admin drain` sets it and
waits until no job is busy; `diffleet-admin resume` clears it."""

from collections.abc import Mapping

from diffleet_core.resources.generation_job import JobPhase

DEFAULT_CONFIGMAP = "diffleet-dispatch"
PAUSED_KEY = "paused"
# A job in these phases is on a worker (or on its way to one): a drain waits for it.
BUSY_PHASES = frozenset({JobPhase.SCHEDULED, JobPhase.RUNNING})


def is_paused(data: Mapping[str, str] | None) -> bool:
    """Whether a ConfigMap's data pauses dispatch: only the exact value "true" does."""
    return (data or {}).get(PAUSED_KEY) == "true"


def pause_data(paused: bool) -> dict[str, str]:
    """The ConfigMap data that pauses (or resumes) dispatch."""
    return {PAUSED_KEY: "true" if paused else "false"}
