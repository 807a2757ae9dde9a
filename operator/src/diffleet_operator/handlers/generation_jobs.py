"""GenerationJob handlers: track, admit, cancel, and cancel-before-delete (finalizer)."""

from typing import Any

import kopf

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import generation_job
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobPhase
from diffleet_operator import lifecycle, metrics, status
from diffleet_operator.admission import (
    NotReady,
    choose_seed,
    effective_tier,
    resolve_model,
)
from diffleet_operator.runtime import Runtime

RESOURCE = (API_GROUP, API_VERSION, generation_job.PLURAL)
# A job whose model is not Ready is looked at again this often.
MODEL_WAIT_SECONDS = 2.0


@kopf.on.event(*RESOURCE)
def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keeps the operator's job cache in step with the API server."""
    jobs = Runtime.of(memo).jobs
    if event["type"] == "DELETED":
        jobs.remove(body["metadata"]["uid"])
    else:
        jobs.observe(body)


@kopf.on.create(*RESOURCE, backoff=MODEL_WAIT_SECONDS)
async def admit(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Publishes a job whose models are Ready to its tier's queue; it is then Queued."""
    rt = Runtime.of(memo)
    job = rt.jobs.observe(body)
    namespace = job.namespace
    if not job.active:
        return
    system = rt.settings.system_namespace
    names = [job.spec.model, *(lora.model for lora in job.spec.loras or [])]
    if job.spec.control_net:
        names.append(job.spec.control_net.model)
    for name in names:
        found = resolve_model(rt.models, namespace, name, system)
        if isinstance(found, NotReady):
            patch.status.update(
                status.pending(job.status, job.generation, found.reason, found.message)
            )
            raise kopf.TemporaryError(found.message, delay=MODEL_WAIT_SECONDS)
    tier = effective_tier(await rt.kube.namespace_labels(namespace), job.spec.priority)
    seed = job.status.seed if job.status.seed is not None else choose_seed(job.spec)
    queue = rt.broker.topology.tier_queue(tier)
    await rt.broker.publish_to_queue(
        queue, lifecycle.admitted_message(job, tier, 1), lifecycle.message_id(job, 1)
    )
    patch.status.update(
        status.queued(job.status, job.generation, tier=tier, queue=queue, seed=seed, attempt=1)
    )
    metrics.TRANSITIONS.labels(JobPhase.QUEUED).inc()
    metrics.ADMISSION_SECONDS.observe((status.now() - job.created).total_seconds())
    kopf.info(body, reason=Reason.ADMITTED, message=f"queued in {queue} (tier {tier})")


@kopf.on.field(*RESOURCE, field="spec.cancel", new=True)
async def cancel(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """spec.cancel: true stops the job wherever it is; the resource stays until its TTL."""
    rt = Runtime.of(memo)
    job = rt.jobs.observe(body)
    if not job.phase.finished:
        await lifecycle.stop(rt, job, JobPhase.CANCELLED, Reason.CANCELLED, "cancelled")


@kopf.on.delete(*RESOURCE)
async def cancel_before_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Deleting a job cancels it first (kopf holds a finalizer until this returns)."""
    rt = Runtime.of(memo)
    job = rt.jobs.observe(body)
    if not job.phase.finished:
        await lifecycle.stop(rt, job, JobPhase.CANCELLED, Reason.CANCELLED, "deleted")
