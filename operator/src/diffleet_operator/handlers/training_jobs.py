"""TrainingJob handlers: track, admit and cancel from the watch (as GenerationJobs are:
kopf keeps no annotations on a training); a LoRA's ModelCache Ready completes the
training that made it; a ModelCache becoming Ready lets the trainings waiting for their
base model be admitted."""

from typing import Any

import kopf

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import model_cache, training_job
from diffleet_core.resources.training_job import TRAINED_BY_LABEL
from diffleet_operator.quarantine import Loop
from diffleet_operator.runtime import Runtime

RESOURCE = (API_GROUP, API_VERSION, training_job.PLURAL)


@kopf.on.event(*RESOURCE)
async def track_training(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keeps the training cache in step; admits new trainings and cancels those whose
    spec.cancel became true. A training that cannot be read is quarantined."""
    rt = Runtime.of(memo)
    uid = body["metadata"]["uid"]
    if event["type"] == "DELETED":
        rt.quarantine.forget(uid)
        try:
            await rt.trainings.deleted(uid)
        except Exception as error:  # noqa: BLE001 - the worker's Lease frees the slot anyway
            rt.quarantine.resource_failed(Loop.ADMISSION, body, error)
        return
    try:
        training = rt.trainings.index.observe(body)
    except ValueError as error:  # pydantic's ValidationError included
        rt.trainings.index.remove(uid)
        rt.quarantine.resource_failed(Loop.ADMISSION, body, error)
        return
    try:
        async with rt.trainings.lock(uid):
            await rt.trainings.on_change(training)
    except Exception as error:  # noqa: BLE001 - one training never stops the watch
        rt.quarantine.resource_failed(Loop.ADMISSION, body, error)


@kopf.on.event(API_GROUP, API_VERSION, model_cache.PLURAL)
async def track_models_for_trainings(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    rt = Runtime.of(memo)
    if event["type"] == "DELETED":
        return
    rt.models.observe(body)  # whichever ModelCache handler kopf runs first
    meta = body["metadata"]
    trained_by = (meta.get("labels") or {}).get(TRAINED_BY_LABEL)
    training = rt.trainings.index.named(meta["namespace"], trained_by) if trained_by else None
    try:
        if training is not None:
            async with rt.trainings.lock(training.uid):
                await rt.trainings.complete_if_registered(training)
        await rt.trainings.retry_waiting()
    except Exception as error:  # noqa: BLE001 - one ModelCache never stops the watch
        rt.quarantine.resource_failed(Loop.MODEL_CACHES, body, error)
