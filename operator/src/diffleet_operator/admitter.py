"""Admission of Pending jobs: publish to the tier queue with confirm, then write Queued.

It runs from the GenerationJob watch (`handlers.generation_jobs.track`) rather than
from a kopf creation handler, so kopf writes nothing on a job but its finalizer: no
diff-base or progress annotations, one write and one watch event fewer per job. A job
that cannot be admitted yet (its models are not Ready) or whose admission failed is
tried again by the housekeeping sweep every `RETRY_SECONDS`, and at once when a
ModelCache changes.
"""

import logging
import math
import time

import kopf

from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import JobPhase
from diffleet_operator import lifecycle, metrics, status
from diffleet_operator.admission import NotReady, choose_seed, effective_tier, resolve_model
from diffleet_operator.jobs import TrackedJob
from diffleet_operator.logs import about_job
from diffleet_operator.runtime import Runtime

logger = logging.getLogger(__name__)

# A job waiting for its models (or after a failed admission) is tried again this often.
RETRY_SECONDS = 2.0
IN_FLIGHT = math.inf


class Admitter:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # uid -> when to try its admission again (IN_FLIGHT while trying), for jobs that
        # were tried and are not admitted yet.
        self._due: dict[str, float] = {}
        # Admitted, but the watch has not yet shown them Queued.
        self._admitted: set[str] = set()

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

    async def _try(self, job: TrackedJob) -> None:
        self._due[job.uid] = IN_FLIGHT
        try:
            admitted = await self._admit(job)
        except Exception:
            admitted = False
            logger.exception(
                "admission failed; retrying in %.0fs",
                RETRY_SECONDS,
                extra=about_job(job.namespace, job.name, job.uid),
            )
        if admitted:
            self._due.pop(job.uid, None)
            self._admitted.add(job.uid)
        else:
            self._due[job.uid] = time.monotonic() + RETRY_SECONDS

    async def _admit(self, job: TrackedJob) -> bool:
        """True once published and Queued; False while its models are not Ready."""
        rt = self.rt
        system = rt.settings.system_namespace
        names = [job.spec.model, *(lora.model for lora in job.spec.loras or [])]
        if job.spec.control_net:
            names.append(job.spec.control_net.model)
        for name in names:
            found = resolve_model(rt.models, job.namespace, name, system)
            if isinstance(found, NotReady):
                await self._wait_in_pending(job, found)
                return False
        tier = effective_tier(await rt.kube.namespace_labels(job.namespace), job.spec.priority)
        seed = job.status.seed if job.status.seed is not None else choose_seed(job.spec)
        queue = rt.broker.topology.tier_queue(tier)
        await rt.broker.publish_to_queue(
            queue, lifecycle.admitted_message(job, tier, 1), lifecycle.message_id(job, 1)
        )
        patch = status.queued(
            job.status, job.generation, tier=tier, queue=queue, seed=seed, attempt=1
        )
        await rt.kube.patch_job_status(job.namespace, job.name, patch)
        metrics.TRANSITIONS.labels(JobPhase.QUEUED).inc()
        metrics.ADMISSION_SECONDS.observe((status.now() - job.created).total_seconds())
        message = f"queued in {queue} (tier {tier})"
        rt.kube.post_event(job.body, reason=Reason.ADMITTED, message=message)
        return True

    async def _wait_in_pending(self, job: TrackedJob, missing: NotReady) -> None:
        """Pending with the reason, written only when it changes."""
        if job.status.reason == missing.reason and job.status.message == missing.message:
            return
        patch = status.pending(job.status, job.generation, missing.reason, missing.message)
        await self.rt.kube.patch_job_status(job.namespace, job.name, patch)
