"""What a job waiting for a worker needs of one, as the autoscaler (which pool to grow)
and the training scheduler (which training gives its slot back) ask it."""

from typing import TYPE_CHECKING

from diffleet_core.resources.generation_job import Tier
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.queue.admission import NotReady, resolve_job_models
from diffleet_operator.scheduler.eligibility import Requirements, job_requirements

if TYPE_CHECKING:
    from diffleet_operator.runtime import Runtime


def waiting_job_needs(rt: "Runtime", job: TrackedJob, tier: Tier) -> Requirements | None:
    """The job's requirements with its style applied; None while one of its models is not
    Ready: it waits for that, not for a worker."""
    spec = rt.styles.spec(job)
    models = resolve_job_models(rt.models, job.namespace, spec, rt.settings.system_namespace)
    if isinstance(models, NotReady):
        return None
    return job_requirements(models, tier, spec.gpu_class)
