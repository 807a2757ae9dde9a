"""Transitions with side effects beyond a status patch: publishing a job to its tenant
queue, requeueing it after a failure, and stopping it (cancel, timeout)."""

import logging

from diffleet_core.logs import about_job
from diffleet_core.messages import AdmittedJob, CancelJob, JobRef
from diffleet_core.queues import backoff_step
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobPhase, Tier
from diffleet_operator import metrics, status
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.quarantine import Loop
from diffleet_operator.queue.admission import seed_of
from diffleet_operator.runtime import Runtime

logger = logging.getLogger(__name__)


def admitted_message(job: TrackedJob, tier: Tier, attempt: int) -> AdmittedJob:
    return AdmittedJob(
        job=JobRef(uid=job.uid, namespace=job.namespace, name=job.name, attempt=attempt),
        tier=tier,
        admitted_at=status.now(),
    )


def message_id(job: TrackedJob, attempt: int) -> str:
    return f"{job.uid}/{attempt}"


async def requeue(rt: Runtime, job: TrackedJob, reason: str, message: str) -> None:
    """Puts the job back in its tenant queue after a backoff, or fails it when out of retries.

    The delayed message is published (confirmed) before the status says Queued with the
    new attempt, so a crash in between leaves a stale message, never a lost job.
    """
    attempts = job.status.attempts
    if attempts > job.spec.max_retries:
        gave_up = f"{message}; gave up after {attempts} attempt(s)"
        await finish(rt, job, JobPhase.FAILED, reason, gave_up)
        return
    rt.fleet.forget(job.uid)
    tier = job.status.tier or Tier.FREE
    attempt = attempts + 1
    delay = backoff_step(
        min(
            rt.operator.requeue_backoff_seconds * 2 ** (attempts - 1),
            rt.operator.requeue_backoff_max_seconds,
        )
    )
    # The delay queue dead-letters by routing key: back to the job's tenant queue.
    queue = await rt.queues.declare(tier, job.namespace)
    await rt.broker.publish_delayed(
        queue, admitted_message(job, tier, attempt), message_id(job, attempt), delay
    )
    patch = status.queued(
        job.status,
        job.generation,
        tier=tier,
        queue=queue,
        seed=seed_of(job),
        attempt=attempt,
        reason=reason,
        message=f"{message}; attempt {attempt} in {delay}s",
    )
    if not await rt.statuses.write(job.namespace, job.name, job.uid, patch):
        return  # finished meanwhile: the delayed message is stale and dropped
    metrics.REQUEUES.labels(reason).inc()
    rt.kube.post_event(job.body, reason=reason, message=patch["message"], warning=True)


def cancel_requested(job: TrackedJob) -> bool:
    """spec.cancel is true on a job that has not ended (nor is being deleted)."""
    return bool(job.spec.cancel) and not job.phase.finished and not job.deleting


async def cancel(rt: Runtime, job: TrackedJob) -> None:
    """spec.cancel: true stops the job wherever it is; the resource stays until its TTL."""
    await stop(rt, job, JobPhase.CANCELLED, Reason.CANCELLED, "cancelled")


async def stop(rt: Runtime, job: TrackedJob, phase: JobPhase, reason: Reason, message: str) -> None:
    """Ends an unfinished job as Cancelled or Failed; a worker running it is told to stop.

    Its queued messages become stale (the status no longer says Queued), so it never
    runs afterwards.
    """
    # A job just dispatched runs on its worker before the watch shows it Scheduled.
    on_worker = job.phase in (JobPhase.SCHEDULED, JobPhase.RUNNING)
    worker = job.status.worker if on_worker else rt.fleet.holder(job.uid)
    if worker:
        order = CancelJob(
            job=JobRef(
                uid=job.uid,
                namespace=job.namespace,
                name=job.name,
                attempt=max(job.status.attempts, 1),
            ),
            reason=reason,
        )
        await rt.broker.publish_to_exchange(rt.broker.topology.control_exchange, worker, order)
    await finish(rt, job, phase, reason, message)


async def finish(rt: Runtime, job: TrackedJob, phase: JobPhase, reason: str, message: str) -> None:
    """Ends the job as Failed or Cancelled with its reason, and frees its worker slot."""
    rt.held.drop(job.uid)
    rt.fleet.forget(job.uid)
    patch = status.finished_unsuccessfully(
        job.status, job.generation, phase=phase, reason=reason, message=message
    )
    if not await rt.statuses.write(job.namespace, job.name, job.uid, patch):
        return  # finished meanwhile
    metrics.TRANSITIONS.labels(phase).inc()
    rt.kube.post_event(job.body, reason=reason, message=message, warning=phase is JobPhase.FAILED)


async def recover_jobs_of(rt: Runtime, worker_id: str, extra_uids: frozenset[str]) -> None:
    """Requeues the unfinished jobs of a worker that is gone (Lease expired or deleted),
    one at a time: a job whose requeue fails is quarantined, the others still requeued."""
    for job in rt.jobs.all():
        on_worker = job.status.worker == worker_id or job.uid in extra_uids
        if on_worker and job.active and job.phase in (JobPhase.SCHEDULED, JobPhase.RUNNING):
            logger.warning(
                "worker %s lost; requeueing the job",
                worker_id,
                extra=about_job(job.namespace, job.name, job.uid),
            )
            try:
                await requeue(rt, job, Reason.WORKER_LOST, f"worker {worker_id} was lost")
            except Exception as error:  # noqa: BLE001 - one job never stops the recovery
                await rt.quarantine.job_failed(Loop.HOUSEKEEPING, job.body, error)
