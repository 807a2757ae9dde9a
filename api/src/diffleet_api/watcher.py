"""The job watcher: one per API replica, one of them leading (a PostgreSQL advisory lock,
held by a connection of its own; if that connection dies the lock goes with it and the
leader stops). The leader follows every GenerationJob, from REST or kubectl:

    1. records its history (request, phase, status, outputs) at every phase change;
    2. on a terminal phase, settles (Succeeded) or refunds (Failed, Cancelled, deleted
       before finishing) the job's credits, once;
    3. enqueues the webhook of a job with spec.webhookUrl, once, and delivers due
       webhooks (webhooks.py);
    4. deletes the jobs the API created but never reserved credits for, once older than
       `abandon_unreserved_after_seconds`: a replica died (or gave up) between the
       create and the reservation, so no client was told of them and nobody would pay.

Each job is handled on its own (isolation.py): a job whose handling fails by its own
fault (a status the models refuse, say) is quarantined: its history row says why, its
credits are settled or refunded all the same and its webhook delivery, if any, is
recorded failed with the reason; the watch goes on with the next event. A job the sweep
cannot delete (a 4xx) is left alone, its history saying why. A dependency's failure
(PostgreSQL, the API server) stops the leader instead, which starts over after a pause.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

import httpx
import psycopg
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_api import history, leadership, ledger, webhooks
from diffleet_api.egress import webhook_transport
from diffleet_api.isolation import Loop, Quarantine, dependency_failed, reason
from diffleet_api.kube import API, CREATED_BY, Body
from diffleet_api.metrics import JOBS_ABANDONED, JOBS_FINALIZED
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_core.logs import job_context
from diffleet_core.resources.generation_job import JobPhase

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
WATCH_SECONDS = 60  # a dead watch connection is noticed within this and a grace
DELIVERY_POLL_SECONDS = 0.25
DELETED = "Deleted"
FINISHED = frozenset(phase.value for phase in JobPhase if phase.finished)


def phase_of(kind: str, body: Body) -> str:
    """The phase to record of a watch event: the job's (any string: the watcher records
    what it sees), or DELETED for a job deleted before it finished."""
    status = body.get("status")
    phase = str((status.get("phase") if isinstance(status, dict) else None) or JobPhase.PENDING)
    return DELETED if kind == "DELETED" and phase not in FINISHED else phase


def finished(phase: str) -> bool:
    """Whether the job's credits are settled or refunded at `phase`."""
    return phase == DELETED or phase in FINISHED


class JobWatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.phases: dict[str, str] = {}
        self.unfinished_from_api: set[str] = set()  # uids of the API's jobs still running
        # Kept across restarts, so that a job met again is not reported again.
        self.quarantined_jobs = Quarantine(Loop.JOB_WATCHER)
        self.undeletable = Quarantine(Loop.ABANDON_SWEEP)  # keys: namespace/name

    async def run(self) -> None:
        """Forever: wait to lead, then follow jobs and deliver webhooks until leadership
        or a dependency fails; then start over after a pause."""
        while True:
            try:
                await self.lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("job watcher stopped; starting over in %.0fs", RETRY_SECONDS)
            self.phases.clear()
            self.unfinished_from_api.clear()
            await asyncio.sleep(RETRY_SECONDS)

    async def lead(self) -> None:
        namespaces: list[str | None] = [*self.settings.watch_namespaces] or [None]
        await leadership.lead(
            "job watcher",
            self.runtime.platform.database_url,
            self.settings.watcher_lock,
            [
                *(self.follow(namespace) for namespace in namespaces),
                self.deliver(),
                self.sweep(),
            ],
        )

    # ------------------------------------------------------------ following jobs

    async def follow(self, namespace: str | None) -> None:
        kube = self.runtime.kube
        while True:
            listed_at = await leadership.database_now(self.runtime.pool)
            items, version = await kube.list_all_jobs(namespace)
            for body in items:
                await self.handle("ADDED", body)
            listed = [body["metadata"]["uid"] for body in items]
            await self.catch_up_deleted(namespace, listed, listed_at)
            try:
                while True:
                    async for kind, body in kube.job_events(namespace, version, WATCH_SECONDS):
                        version = body.get("metadata", {}).get("resourceVersion", version)
                        if kind == "ERROR":
                            raise ApiException(status=body.get("code", 500))
                        if kind != "BOOKMARK":
                            await self.handle(kind, body)
            except ApiException as error:
                if error.status != 410:
                    raise
                logger.info("watch of %s expired; listing again", namespace or "all namespaces")

    async def catch_up_deleted(
        self, namespace: str | None, listed: list[str], listed_at: datetime
    ) -> None:
        """Refunds the jobs deleted before they finished while no watch ran (the watcher
        was down, PostgreSQL or the API server away): reserved before the list began yet
        not in it. Each is handled as the DELETED event of its last recorded state."""
        async with self.runtime.pool.connection() as connection:
            rows = await ledger.vanished(connection, namespace, listed, listed_at)
        for row in rows:
            meta = {key: row[key] for key in ("uid", "namespace", "name")}
            body = {
                "metadata": meta | {"creationTimestamp": row["created_at"].isoformat()},
                "spec": row["spec"],
                "status": row["status"],
            }
            await self.handle("DELETED", body)

    async def handle(self, kind: str, body: Body) -> None:
        """Observes one event; quarantines the job when that fails by its own fault."""
        with job_context(body["metadata"]["uid"]):
            try:
                await self.observe(kind, body)
            except Exception as error:
                if dependency_failed(error):
                    raise
                await self.quarantine(kind, body, reason(error))

    async def observe(self, kind: str, body: Body) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        phase = phase_of(kind, body)
        self.track_from_api(kind, body, phase)
        if kind == "DELETED" and phase != DELETED:  # it had finished: settled or refunded
            self.gone(meta)
            return
        if self.phases.get(uid) == phase:
            return
        async with self.runtime.pool.connection() as connection, connection.transaction():
            await history.record(connection, body, phase, finished(phase))
            if finished(phase):
                await self.settle(connection, uid, phase)
                await self.enqueue_webhook(connection, body, phase)
        self.seen(meta, phase)

    def seen(self, meta: dict[str, Any], phase: str) -> None:
        if phase == DELETED:
            self.gone(meta)
        else:
            self.phases[meta["uid"]] = phase

    def gone(self, meta: dict[str, Any]) -> None:
        """Drops what is remembered of a deleted job."""
        self.phases.pop(meta["uid"], None)
        self.quarantined_jobs.forget(meta["uid"])
        self.undeletable.forget(f"{meta['namespace']}/{meta['name']}")

    async def settle(self, connection: psycopg.AsyncConnection[Any], uid: str, phase: str) -> None:
        """Settles (Succeeded) or refunds (any other end) the job's credits, once."""
        outcome: ledger.Outcome = "settle" if phase == JobPhase.SUCCEEDED else "refund"
        if await ledger.finish(connection, uid, outcome):
            JOBS_FINALIZED.labels(phase).inc()

    async def enqueue_webhook(
        self, connection: psycopg.AsyncConnection[Any], body: Body, phase: str
    ) -> None:
        url = (body.get("spec") or {}).get("webhookUrl")
        if not url:
            return
        # As history stores it: a string the models refuse is escaped, not fatal.
        job = JobPublic.from_resource(history.storable(body))
        payload = {
            "type": "job.finished",
            "phase": phase,
            "job": job.model_dump(mode="json", by_alias=True),
        }
        meta = body["metadata"]
        await webhooks.enqueue(connection, meta["namespace"], meta["uid"], url, payload)

    async def quarantine(self, kind: str, body: Body, why: str) -> None:
        """What can still be done for a job whose handling failed by its own fault: its
        history row records the phase and why, its credits are settled or refunded and
        its webhook delivery, if any, is recorded failed with the reason (never sent).
        Reported once per job; each step of this runs again, harmlessly, when the job is
        met again (its next event, a restart of the watcher)."""
        meta = body["metadata"]
        phase = phase_of(kind, body)
        record = f"job {meta['namespace']}/{meta['name']} at phase {phase}"
        first = self.quarantined_jobs.add(meta["uid"], record, why)
        async with self.runtime.pool.connection() as connection:
            steps = [partial(history.record, connection, body, phase, finished(phase), why)]
            if finished(phase):
                steps.append(partial(self.settle, connection, meta["uid"], phase))
                steps.append(partial(self.fail_webhook, connection, body, phase, why))
            for step in steps:
                await self.contained(step, record if first else None)
        self.seen(meta, phase)

    @staticmethod
    async def contained(step: Callable[[], Awaitable[None]], record: str | None) -> None:
        """Runs one step of a quarantine; one that fails by the record's fault too is
        skipped (logged when `record` is given), so that the next step still runs."""
        try:
            await step()
        except Exception as error:
            if dependency_failed(error):
                raise
            if record:
                logger.exception("%s: a step of its quarantine failed too", record)

    async def fail_webhook(
        self, connection: psycopg.AsyncConnection[Any], body: Body, phase: str, why: str
    ) -> None:
        spec = body.get("spec")
        url = spec.get("webhookUrl") if isinstance(spec, dict) else None
        if not isinstance(url, str) or not url:
            return
        meta = body["metadata"]
        job = {"id": meta["name"], "uid": meta["uid"], "namespace": meta["namespace"]}
        payload = {"type": "job.finished", "phase": phase, "job": job}
        namespace, uid = meta["namespace"], meta["uid"]
        await webhooks.enqueue(connection, namespace, uid, url, payload, failure=why)

    # ------------------------------------------------------------ abandoned jobs

    def track_from_api(self, kind: str, body: Body, phase: str) -> None:
        meta = body["metadata"]
        ours = (meta.get("labels") or {}).get(CREATED_BY) == API
        going = kind == "DELETED" or meta.get("deletionTimestamp") or finished(phase)
        if ours and not going:
            self.unfinished_from_api.add(meta["uid"])
        else:
            self.unfinished_from_api.discard(meta["uid"])

    async def sweep(self) -> None:
        grace = self.settings.abandon_unreserved_after_seconds
        while True:
            await asyncio.sleep(grace / 2)
            if not self.unfinished_from_api:
                continue
            async with self.runtime.pool.connection() as connection:
                abandoned = await ledger.abandon(connection, [*self.unfinished_from_api], grace)
            for namespace, name in abandoned:
                if f"{namespace}/{name}" not in self.undeletable:
                    await self.delete_abandoned(namespace, name)

    async def delete_abandoned(self, namespace: str, name: str) -> None:
        """Deletes an abandoned job; one the API server refuses to delete (a 4xx) is
        quarantined: left alone, its history saying why."""
        grace = self.settings.abandon_unreserved_after_seconds
        logger.warning(
            "deleting job %s/%s: created by the API, no credits reserved in %.0fs",
            namespace, name, grace,
        )  # fmt: skip
        try:
            await self.runtime.kube.delete_job(namespace, name)
        except Exception as error:
            if dependency_failed(error):
                raise
            why = reason(error)
            self.undeletable.add(f"{namespace}/{name}", f"abandoned job {namespace}/{name}", why)
            async with self.runtime.pool.connection() as connection:
                await history.quarantined(connection, namespace, name, why)
            return
        JOBS_ABANDONED.inc()

    # ------------------------------------------------------------ webhooks

    async def deliver(self) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout_seconds)
        transport = webhook_transport(self.settings.webhook_allow_private_targets)
        async with httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport
        ) as http:
            while True:
                async with self.runtime.pool.connection() as connection:
                    sent = await webhooks.deliver_due(connection, http, self.settings)
                if not sent:
                    await asyncio.sleep(DELIVERY_POLL_SECONDS)
