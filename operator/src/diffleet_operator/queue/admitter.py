"""Admission of Pending jobs: publish to the job's tenant queue (its tier and namespace,
diffleet_operator.queue.tenant_queues) with confirm, then hold Queued.

It runs from the GenerationJob watch (`handlers.generation_jobs.track`) rather than
from a kopf creation handler, so kopf writes nothing on a job but (where the admission
policy of manifests/admission/ is not installed) its finalizer: no diff-base or progress
annotations, one write and one watch event fewer per job. The Queued status is held
(diffleet_operator.queue.held) and written here only for a job that has to wait; one that is
dispatched at once gets it with Scheduled. A prompt that its namespace's content policy
denies (diffleet_operator.content_policy) fails the job here, reason PromptRejected. A
job that cannot be admitted yet (its models are not Ready) or whose admission failed is
tried again by the housekeeping sweep every `RETRY_SECONDS`, and at once when a
ModelCache changes; one whose admission fails for a reason of its own is quarantined
(diffleet_operator.quarantine) and tried again as well.
"""

import asyncio
import dataclasses
import logging
import math
import time

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from opentelemetry.trace import SpanKind

from diffleet_core import telemetry
from diffleet_core.logs import about_job, job_context
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobPhase
from diffleet_operator import lifecycle, metrics, status
from diffleet_operator.cache.jobs import TrackedJob
from diffleet_operator.quarantine import Loop, describe, transient
from diffleet_operator.queue.admission import NotReady, effective_tier, resolve_job_models, seed_of
from diffleet_operator.queue.held import Admission
from diffleet_operator.runtime import Runtime
from diffleet_operator.styles import StyleRefused

logger = logging.getLogger(__name__)

# A job waiting for its models (or after a failed admission) is tried again this often.
RETRY_SECONDS = 2.0
IN_FLIGHT = math.inf
# Queued status writes of waiting jobs in flight at once.
WRITES_IN_FLIGHT = 16


class Admitter:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # uid -> when to try its admission again (IN_FLIGHT while trying), for jobs that
        # were tried and are not admitted yet.
        self._due: dict[str, float] = {}
        # Admitted, but the watch has not yet shown them Queued (or later).
        self._admitted: set[str] = set()
        self._writers = asyncio.Semaphore(WRITES_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        # Jobs whose Queued write is on its way (claimed from the held admissions).
        self._writing: set[str] = set()

    @staticmethod
    def of(memo: kopf.Memo) -> "Admitter":
        """The admitter that `main.run` put in kopf's memo."""
        admitter: Admitter = memo["admitter"]
        return admitter

    @staticmethod
    def wants(job: TrackedJob) -> bool:
        """A job that is new or waits in Pending, and is neither cancelled nor deleted."""
        return job.phase is JobPhase.PENDING and job.active and not job.deleting

    async def on_change(self, job: TrackedJob) -> None:
        """A job was seen (watch event): admit it unless an admission was tried lately."""
        if not self.wants(job):
            self.forget(job.uid)
        elif job.uid not in self._due and job.uid not in self._admitted:
            await self._try(job)

    async def retry_waiting(self) -> None:
        """Tries again the Pending jobs that are due (RETRY_SECONDS after their last try)."""
        now = time.monotonic()
        for uid, due in list(self._due.items()):
            job = self.rt.jobs.get(uid)
            if job is None or not self.wants(job):
                self.forget(uid)
            elif due <= now:
                await self._try(job)

    async def retry_all_waiting(self) -> None:
        """A ModelCache changed: every waiting job is due now."""
        for uid, due in self._due.items():
            if due != IN_FLIGHT:
                self._due[uid] = 0.0
        await self.retry_waiting()

    def forget(self, uid: str) -> None:
        self._due.pop(uid, None)
        self._admitted.discard(uid)

    def show_queued(self, admissions: list[Admission]) -> None:
        """These admitted jobs wait (their admissions claimed from the held ones): writes
        their Queued status in the background, a bounded number at a time."""
        for admission in admissions:
            self._writing.add(admission.uid)
            task = asyncio.create_task(self._write_queued(admission))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def writing_queued(self, uid: str) -> bool:
        """The job's Queued status is being written: Pending on the API server means
        "not yet", not "never admitted"."""
        return uid in self._writing

    def show_overdue(self) -> None:
        """Writes Queued for jobs held longer than `queued_status_delay_seconds`."""
        delay = self.rt.operator.queued_status_delay_seconds
        self.show_queued(self.rt.held.claim_older_than(delay))

    async def _try(self, job: TrackedJob) -> None:
        self._due[job.uid] = IN_FLIGHT
        with job_context(job.uid):
            try:
                admitted = await self._admit(job)
            except Exception as error:  # noqa: BLE001 - one job never stops admission
                admitted = False
                await self.rt.quarantine.job_failed(Loop.ADMISSION, job.body, error)
        if admitted:
            self._due.pop(job.uid, None)
            self._admitted.add(job.uid)
        else:
            self._due[job.uid] = time.monotonic() + RETRY_SECONDS

    async def _admit(self, job: TrackedJob) -> bool:
        """True once decided: published (Queued held), or Failed for a prompt its
        namespace's policy denies, a style that cannot apply (diffleet_operator.styles) or
        models that cannot run together; False while its models are not Ready."""
        rt = self.rt
        policy = await rt.policies.of(job.namespace)
        if rule := policy.denied(job.spec.prompt):
            # Refused before its models are even looked for: no worker is ever given it.
            message = f"the prompt matches the deny rule {rule!r} of ConfigMap {policy.source}"
            await lifecycle.finish(rt, job, JobPhase.FAILED, Reason.PROMPT_REJECTED, message)
            return True
        spec = await rt.styles.resolve(job)
        if isinstance(spec, StyleRefused):
            await lifecycle.finish(rt, job, JobPhase.FAILED, Reason.INVALID_SPEC, spec.message)
            return True
        models = resolve_job_models(
            rt.models, job.namespace, spec, rt.settings.system_namespace, policy.safety_model
        )
        if isinstance(models, NotReady):
            await self._wait_in_pending(job, models)
            return False
        annotations = job.body["metadata"].get("annotations")
        attributes = telemetry.job_attributes(job.namespace, job.name, job.uid)
        attributes[telemetry.MODEL] = job.spec.primary_model
        # The trace the API started for the job, else (kubectl) a new one.
        with telemetry.tracer.start_as_current_span(
            "admission",
            context=telemetry.context_from_annotations(annotations),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        ) as span:
            if telemetry.TRACEPARENT_ANNOTATION not in (annotations or {}):
                await self._annotate_trace(job)
            if problem := models.incompatibility(spec):
                # Refused here, before any queue: no worker is ever given it.
                await lifecycle.finish(
                    rt, job, JobPhase.FAILED, Reason.INCOMPATIBLE_MODELS, problem
                )
                return True
            labels = await rt.kube.namespace_labels(job.namespace)
            tier = effective_tier(labels, job.spec.priority)
            span.set_attribute(telemetry.TIER, tier.value)
            seed = seed_of(job)
            queue = await rt.queues.declare(tier, job.namespace)
            await rt.broker.publish_to_queue(
                queue, lifecycle.admitted_message(job, tier, 1), lifecycle.message_id(job, 1)
            )
        rt.held.hold(Admission(job.uid, 1, tier, queue, seed, status.now()))
        rt.autoscaler.trigger()  # it waits now, before the dispatcher has received it
        metrics.ADMISSION_SECONDS.observe((status.now() - job.created).total_seconds())
        return True

    async def _annotate_trace(self, job: TrackedJob) -> None:
        """Writes the trace this admission started (a job created without one, with
        kubectl) on the job, where the dispatch and anyone reading the job find it. A
        failed write costs the trace its link, never the job its admission."""
        annotations: dict[str, str] = {}
        telemetry.annotate(annotations)
        if not annotations:
            return  # tracing is off
        try:
            await self.rt.kube.annotate_job(job.namespace, job.name, annotations)
        except Exception as error:  # noqa: BLE001 - tracing never stops a job
            logger.warning(
                "trace annotation not written (%s)",
                describe(error),
                extra=about_job(job.namespace, job.name, job.uid),
            )

    async def _write_queued(self, admission: Admission) -> None:
        try:
            await self._write_queued_now(admission)
        finally:
            self._writing.discard(admission.uid)

    async def _write_queued_now(self, admission: Admission) -> None:
        rt = self.rt
        async with self._writers:
            job = rt.jobs.get(admission.uid)
            if job is None or not self.wants(job):
                return  # deleted, cancelled or already past Pending
            patch = status.queued(
                job.status,
                job.generation,
                tier=admission.tier,
                queue=admission.queue,
                seed=admission.seed,
                attempt=admission.attempt,
                queued_at=admission.queued_at,
            )
            try:
                if not await rt.kube.patch_job_status(job.namespace, job.name, patch):
                    return  # deleted or moved on meanwhile
            except Exception as error:  # noqa: BLE001 - one job never stops admission
                if transient(error):
                    self._hold_again(job, admission, describe(error))
                elif not (isinstance(error, ApiException) and error.status == 404):
                    await rt.quarantine.job(Loop.ADMISSION, job.body, error)
                return  # 404: deleted meanwhile
        metrics.TRANSITIONS.labels(JobPhase.QUEUED).inc()
        rt.kube.post_event(job.body, reason=Reason.ADMITTED, message=admission.summary)

    def _hold_again(self, job: TrackedJob, admission: Admission, why: str) -> None:
        """The Queued write failed: held again, it is written (or dispatched) later."""
        logger.warning(
            "Queued not written (%s); held again",
            why,
            extra=about_job(job.namespace, job.name, job.uid),
        )
        self.rt.held.hold(dataclasses.replace(admission, held_since=time.monotonic()))

    async def _wait_in_pending(self, job: TrackedJob, missing: NotReady) -> None:
        """Pending with the reason, written only when it changes."""
        if job.status.reason == missing.reason and job.status.message == missing.message:
            return
        patch = status.pending(job.status, job.generation, missing.reason, missing.message)
        await self.rt.kube.patch_job_status(job.namespace, job.name, patch)
