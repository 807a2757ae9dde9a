"""The operator's TrainingJobs: the cache of the watch, their status writes, and the
transitions with side effects (admission, requeue, cancel, a lost worker, the LoRA's
ModelCache). Shared by the kopf handlers, the training scheduler and the results loop.

Every status write reads the training first and judges the transition on what is
stored (`write`): a late or duplicate report never moves a training back. One write at a
time per training (`lock`), so a worker's reports apply in order."""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.messages import AdmittedTraining, CancelJob, JobRef
from diffleet_core.resources import model_cache
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.model_cache import (
    ModelCachePhase,
    ModelFormat,
    ModelType,
)
from diffleet_core.resources.training_job import (
    TRAINED_BY_LABEL,
    TrainedModel,
    TrainingCheckpoint,
    TrainingMethod,
    TrainingPhase,
)
from diffleet_core.storage import S3Location
from diffleet_operator import status as job_status
from diffleet_operator.quarantine import Loop
from diffleet_operator.queue.admission import NotReady, resolve_model
from diffleet_operator.scheduler.eligibility import Requirements, requirements
from diffleet_operator.training import admission
from diffleet_operator.training import status as patches
from diffleet_operator.training.records import TrackedTraining, TrainingIndex

if TYPE_CHECKING:
    from diffleet_operator.runtime import Runtime

logger = logging.getLogger(__name__)

S3_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3})
# A status write re-reads and judges again at most this many times on a conflict.
CONFLICT_RETRIES = 5

Judge = Callable[[TrackedTraining], dict[str, Any] | None]


class Trainings:
    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.index = TrainingIndex()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # uid -> stepsRun of the attempts before the running one (stepsRun = that + the
        # running attempt's own count).
        self.steps_before: dict[str, int] = {}
        # Trainings told to stop (CancelJob sent), so a watch event does not send it again.
        self._cancelling: set[str] = set()
        # Wakes the training scheduler: a training was queued or a slot freed.
        self.wake = asyncio.Event()

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks[uid]

    async def deleted(self, uid: str) -> None:
        """The TrainingJob is deleted: a worker running it is told to stop (its slot
        frees when its Lease says so), and it is forgotten."""
        training = self.index.get(uid)
        worker = self.rt.fleet.holder(uid) or (training.status.worker if training else None)
        if training is not None and worker and not training.phase.finished:
            order = CancelJob(job=training.ref(max(training.status.attempts, 1)), reason="Deleted")
            topology = self.rt.broker.topology
            await self.rt.broker.publish_to_exchange(topology.control_exchange, worker, order)
        self.forget(uid)

    def forget(self, uid: str) -> None:
        self.index.remove(uid)
        self._locks.pop(uid, None)
        self.steps_before.pop(uid, None)
        self._cancelling.discard(uid)

    async def current(self, ref: JobRef) -> TrackedTraining | None:
        """The training a message names, from the cache, else read (the watch may not have
        listed it yet); None when it is gone."""
        training = self.index.get(ref.uid)
        if training is None:
            body = await self.rt.kube.get_training(ref.namespace, ref.name)
            if body is None or body["metadata"]["uid"] != ref.uid:
                return None
            training = self.index.observe(body)
        return training

    async def write(self, training: TrackedTraining, judge: Judge) -> TrackedTraining | None:
        """Writes what `judge` makes of the training as stored (None: nothing, the
        training has moved on); the training as written, None when nothing was."""
        for _ in range(CONFLICT_RETRIES):
            body = await self.rt.kube.get_training(training.namespace, training.name)
            if body is None or body["metadata"]["uid"] != training.uid:
                return None
            stored = self.index.observe(body)
            patch = judge(stored) if not stored.phase.finished else None
            if patch is None:
                return None
            try:
                await self.rt.kube.patch_training_status(
                    stored.namespace, stored.name, patch, stored.resource_version
                )
            except ApiException as error:
                if error.status == 409:
                    continue
                if error.status == 404:
                    return None
                raise
            return self.index.observe(_merged(body, patch))
        raise ApiException(status=409, reason=f"status of {training.name} kept changing")

    # Admission

    async def on_change(self, training: TrackedTraining) -> None:
        """A watch event: admits a new training, cancels one whose spec.cancel became true."""
        if training.cancel_requested and not training.deleting:
            await self.cancel(training)
        elif training.phase is TrainingPhase.PENDING and not training.deleting:
            await self.admit(training)

    async def admit(self, training: TrackedTraining) -> None:
        """Refuses it (Failed, Admitted False naming the field), leaves it Pending while its
        base model is not Ready, or queues it: the AdmittedTraining is confirmed in the
        training queue before the status says Queued."""
        rt = self.rt
        system = rt.settings.system_namespace
        base = admission.base_model(rt.models, training.namespace, training.spec, system)
        if isinstance(base, admission.Waits):
            await self.write(training, lambda t: _if_pending(t, patches.waiting, base))
            return
        if isinstance(base, admission.Refused):
            await self.refuse(training, base)
            return
        taken = admission.output_taken(rt.models, training.namespace, training.spec, training.name)
        if taken is not None:
            await self.refuse(training, taken)
            return
        examples = await asyncio.to_thread(
            admission.dataset_examples,
            _list_objects,
            training.spec,
            training.namespace,
            rt.settings.buckets.uploads,
        )
        if isinstance(examples, admission.Refused):
            await self.refuse(training, examples)
            return
        count: int = examples
        seed = training.status.seed
        seed = admission.choose_seed(training.spec) if seed is None else seed
        await self.publish_admitted(training.ref(training.status.attempts + 1))
        written = await self.write(
            training,
            lambda t: patches.queued(t, seed, count) if t.phase is TrainingPhase.PENDING else None,
        )
        if written is not None:
            self.rt.kube.post_event(written.body, "Queued", written.status.message or "")
            self.wake.set()

    async def refuse(self, training: TrackedTraining, refused: admission.Refused) -> None:
        written = await self.write(
            training,
            lambda t: (
                patches.refused(t, refused.reason, refused.message)
                if t.phase is TrainingPhase.PENDING
                else None
            ),
        )
        if written is not None:
            self.rt.kube.post_event(written.body, refused.reason, refused.message, warning=True)

    async def retry_waiting(self) -> None:
        """Trainings waiting for their base model are looked at again (a ModelCache changed)."""
        for training in self.index.all():
            if training.phase is TrainingPhase.PENDING and training.status.reason in (
                Reason.MODEL_NOT_READY,
            ):
                try:
                    await self.admit(training)
                except Exception as error:  # noqa: BLE001 - one training never stops the others
                    self.rt.quarantine.resource_failed(Loop.ADMISSION, training.body, error)

    async def publish_admitted(self, ref: JobRef) -> None:
        broker = self.rt.broker
        queue = broker.topology.training_queue
        await broker.declare_queue(queue)
        message = AdmittedTraining(job=ref, admitted_at=job_status.now())
        await broker.publish_to_queue(queue, message, f"{ref.uid}/{ref.attempt}")

    # Requeue, cancel, end

    async def requeue(
        self,
        training: TrackedTraining,
        attempt: int,
        reason: str,
        message: str,
        *,
        preempted: bool,
        checkpoint: TrainingCheckpoint | None = None,
        steps_run: int | None = None,
    ) -> TrackedTraining | None:
        """Attempt `attempt` ended without finishing: queued again as the next (resuming
        from its last checkpoint), published before the status says so; Cancelled instead
        when a cancel was asked; Failed when too many attempts failed."""
        self.rt.fleet.forget(training.uid)
        if training.spec.cancel:
            return await self.end(
                training, attempt, TrainingPhase.CANCELLED, Reason.CANCELLED, "cancelled"
            )
        failures = attempt - training.status.preemptions - (1 if preempted else 0)
        if failures >= self.rt.operator.training_max_failures:
            gave_up = f"{message}; gave up after {failures} failed attempt(s)"
            return await self.end(training, attempt, TrainingPhase.FAILED, reason, gave_up)
        await self.publish_admitted(training.ref(attempt + 1))
        resumes = f"; attempt {attempt + 1} resumes from step {_resume_step(training, checkpoint)}"
        written = await self.write(
            training,
            lambda t: (
                patches.requeued(
                    t,
                    reason,
                    message + resumes,
                    preempted=preempted,
                    checkpoint=checkpoint,
                    steps_run=steps_run,
                )
                if t.running_as(attempt)
                else None
            ),
        )
        if written is not None:
            self.rt.kube.post_event(written.body, reason, message + resumes, warning=not preempted)
            self.wake.set()
        return written

    async def end(
        self,
        training: TrackedTraining,
        attempt: int | None,
        phase: TrainingPhase,
        reason: str,
        message: str,
        checkpoint: TrainingCheckpoint | None = None,
    ) -> TrackedTraining | None:
        """Failed or Cancelled (`attempt`: only if that attempt is the running one)."""
        self.rt.fleet.forget(training.uid)

        def judge(t: TrackedTraining) -> dict[str, Any] | None:
            if attempt is not None and not t.running_as(attempt):
                return None
            return patches.ended(t, phase, reason, message) | patches.checkpoint_fields(
                t, checkpoint, None
            )

        written = await self.write(training, judge)
        if written is not None:
            self._cancelling.discard(training.uid)
            failed = phase is TrainingPhase.FAILED
            self.rt.kube.post_event(written.body, reason, message, warning=failed)
        return written

    async def cancel(self, training: TrackedTraining) -> None:
        """spec.cancel: a queued training is Cancelled at once (its queued message is then
        stale); a running one is told to stop (CancelJob): it keeps its checkpoint, and its
        TrainingStopped ends it as Cancelled."""
        worker = training.status.worker or self.rt.fleet.holder(training.uid)
        if worker and training.uid not in self._cancelling:
            attempt = max(training.status.attempts, 1)
            order = CancelJob(job=training.ref(attempt), reason=Reason.CANCELLED)
            topology = self.rt.broker.topology
            await self.rt.broker.publish_to_exchange(topology.control_exchange, worker, order)
            self._cancelling.add(training.uid)
        if training.phase in (TrainingPhase.PENDING, TrainingPhase.QUEUED):
            await self.end(training, None, TrainingPhase.CANCELLED, Reason.CANCELLED, "cancelled")

    async def worker_lost(self, worker_id: str) -> None:
        """The worker's trainings are queued again (WorkerLost), each resuming from its last
        checkpoint; one that fails is quarantined, the others still requeued."""
        for training in self.index.all():
            if training.phase is not TrainingPhase.RUNNING or training.status.worker != worker_id:
                continue
            if training.status.output is not None:
                continue  # its LoRA is written: only its ModelCache's verification is left
            logger.warning("worker %s lost; requeueing training %s", worker_id, training.name)
            try:
                async with self.lock(training.uid):
                    await self.requeue(
                        training,
                        training.status.attempts,
                        Reason.WORKER_LOST,
                        f"worker {worker_id} was lost",
                        preempted=False,
                    )
            except Exception as error:  # noqa: BLE001 - one training never stops the recovery
                self.rt.quarantine.resource_failed(Loop.HOUSEKEEPING, training.body, error)

    def waiting_needs(self) -> list[tuple[str, Requirements]]:
        """The queued trainings whose base model is Ready, with what running them needs
        (the autoscaler's demand)."""
        system = self.rt.settings.system_namespace
        found = []
        for training in self.index.all():
            if training.phase is not TrainingPhase.QUEUED or training.spec.cancel:
                continue
            base = resolve_model(
                self.rt.models, training.namespace, training.spec.base_model, system
            )
            if not isinstance(base, NotReady):
                found.append((training.uid, requirements(base, None, training.spec.gpu_class)))
        return found

    # The trained file's ModelCache

    async def register(self, training: TrackedTraining, output: TrainedModel) -> None:
        """Creates the trained file's ModelCache (labelled with the training), or finds the one a
        redelivered report created; the ModelCache handler verifies it."""
        base = self.rt.models.get(training.namespace, training.spec.base_model) or (
            self.rt.models.get(self.rt.settings.system_namespace, training.spec.base_model)
        )
        family = ((base or {}).get("spec") or {}).get("baseModel")
        body = lora_model_cache(training, output, family)
        try:
            await self.rt.kube.create_model_cache(training.namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise

    async def complete_if_registered(self, training: TrackedTraining) -> None:
        """Succeeded once its trained file's ModelCache is Ready; Failed when that is Failed."""
        output = training.status.output
        if output is None or training.phase is not TrainingPhase.RUNNING:
            return
        cache = self.rt.models.get(training.namespace, output.model)
        if cache is None or admission.trained_by(cache) != training.name:
            return
        cache_status = cache.get("status") or {}
        phase = cache_status.get("phase")
        if phase == ModelCachePhase.READY:
            written = await self.write(
                training,
                lambda t: (
                    patches.succeeded(t, output.model)
                    if t.phase is TrainingPhase.RUNNING and t.status.output is not None
                    else None
                ),
            )
            if written is not None:
                self.rt.kube.post_event(
                    written.body, Reason.SUCCEEDED, written.status.message or ""
                )
        elif phase == ModelCachePhase.FAILED:
            reason = str(cache_status.get("reason") or Reason.FAILED)
            message = f"ModelCache {output.model!r}: {cache_status.get('message', '')}"
            await self.end(training, None, TrainingPhase.FAILED, reason, message)


def lora_model_cache(
    training: TrackedTraining, output: TrainedModel, base_family: str | None
) -> dict[str, Any]:
    """The ModelCache of a training's file, in the training's namespace: a lora, or for
    textual-inversion an embedding (its name is the token prompts use)."""
    inversion = training.spec.method is TrainingMethod.TEXTUAL_INVERSION
    spec: dict[str, Any] = {
        "source": output.uri,
        "format": ModelFormat.SAFETENSORS,
        "type": ModelType.EMBEDDING if inversion else ModelType.LORA,
        "sha256": output.digest,
        "sizeBytes": output.size_bytes,
    }
    if base_family is not None:
        spec["baseModel"] = base_family
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": model_cache.KIND,
        "metadata": {
            "name": output.model,
            "namespace": training.namespace,
            "labels": {TRAINED_BY_LABEL: training.name},
        },
        "spec": spec,
    }


def _list_objects(location: S3Location) -> dict[str, int] | None:
    """Every object under the location: key -> size; None when the bucket does not exist."""
    s3 = boto3.client("s3", config=S3_CONFIG)
    objects: dict[str, int] = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=location.key
        ):
            for item in page.get("Contents", []):
                objects[item["Key"]] = int(item["Size"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return None
        raise
    return objects


def _if_pending(
    training: TrackedTraining,
    build: Callable[[TrackedTraining, str, str], dict[str, Any]],
    why: admission.Waits,
) -> dict[str, Any] | None:
    if training.phase is not TrainingPhase.PENDING:
        return None
    if training.status.reason == why.reason and training.status.message == why.message:
        return None  # already says so
    return build(training, why.reason, why.message)


def _resume_step(training: TrackedTraining, checkpoint: TrainingCheckpoint | None) -> int:
    if checkpoint is not None:
        return checkpoint.step
    stored = training.status.checkpoints or []
    return max((c.step for c in stored), default=0)


def _merged(body: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The body with the status merge patch applied (a null removes the field)."""
    merged = dict(body.get("status") or {})
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return {**body, "status": merged}
