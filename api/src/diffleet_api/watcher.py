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
"""

import asyncio
import logging
from typing import Any

import httpx
import psycopg
from kubernetes_asyncio.client.exceptions import ApiException
from psycopg.types.json import Jsonb

from diffleet_api import ledger, webhooks
from diffleet_api.egress import webhook_transport
from diffleet_api.kube import API, CREATED_BY, Body
from diffleet_api.metrics import JOBS_ABANDONED, JOBS_FINALIZED
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_core.resources.generation_job import JobPhase

logger = logging.getLogger(__name__)

LEADER_CHECK_SECONDS = 2.0
RETRY_SECONDS = 2.0
WATCH_SECONDS = 300
DELIVERY_POLL_SECONDS = 0.25
DELETED = "Deleted"


class LeadershipLostError(Exception):
    """The connection that held the advisory lock failed."""


class JobWatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.phases: dict[str, str] = {}
        self.unfinished_from_api: set[str] = set()  # uids of the API's jobs still running

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
        url = self.runtime.platform.database_url
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=5
        ) as lock:
            await self.acquire(lock)
            logger.info("job watcher leading (lock %s)", self.settings.watcher_lock)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.keep(lock))
                namespaces: list[str | None] = [*self.settings.watch_namespaces] or [None]
                for namespace in namespaces:
                    tasks.create_task(self.follow(namespace))
                tasks.create_task(self.deliver())
                tasks.create_task(self.sweep())

    async def acquire(self, lock: psycopg.AsyncConnection[Any]) -> None:
        while True:
            cursor = await lock.execute(
                "select pg_try_advisory_lock(hashtext(%s))", (self.settings.watcher_lock,)
            )
            row = await cursor.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(LEADER_CHECK_SECONDS)

    async def keep(self, lock: psycopg.AsyncConnection[Any]) -> None:
        while True:
            await asyncio.sleep(LEADER_CHECK_SECONDS)
            try:
                await asyncio.wait_for(lock.execute("select 1"), LEADER_CHECK_SECONDS * 2)
            except (psycopg.Error, TimeoutError) as error:
                raise LeadershipLostError(str(error)) from error

    # ------------------------------------------------------------ following jobs

    async def follow(self, namespace: str | None) -> None:
        kube = self.runtime.kube
        while True:
            items, version = await kube.list_all_jobs(namespace)
            for body in items:
                await self.observe("ADDED", body)
            try:
                while True:
                    async for kind, body in kube.job_events(namespace, version, WATCH_SECONDS):
                        version = body.get("metadata", {}).get("resourceVersion", version)
                        if kind == "ERROR":
                            raise ApiException(status=body.get("code", 500))
                        if kind != "BOOKMARK":
                            await self.observe(kind, body)
            except ApiException as error:
                if error.status != 410:
                    raise
                logger.info("watch of %s expired; listing again", namespace or "all namespaces")

    async def observe(self, kind: str, body: Body) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        phase = (body.get("status") or {}).get("phase") or JobPhase.PENDING.value
        self.track_from_api(kind, body, phase)
        if kind == "DELETED":
            if JobPhase(phase).finished:
                self.phases.pop(uid, None)
                return
            phase = DELETED
        if self.phases.get(uid) == phase:
            return
        async with self.runtime.pool.connection() as connection, connection.transaction():
            await self.record(connection, body, phase)
            if phase == DELETED or JobPhase(phase).finished:
                await self.finish(connection, body, phase)
        if phase == DELETED:
            self.phases.pop(uid, None)
        else:
            self.phases[uid] = phase

    async def record(
        self, connection: psycopg.AsyncConnection[Any], body: Body, phase: str
    ) -> None:
        meta = body["metadata"]
        finished = phase == DELETED or JobPhase(phase).finished
        await connection.execute(
            "insert into jobs (uid, tenant_id, namespace, name, spec, status, phase, created_at,"
            " finished_at)"
            " values (%(uid)s, (select id from tenants where namespace = %(namespace)s),"
            " %(namespace)s, %(name)s, %(spec)s, %(status)s, %(phase)s, %(created)s,"
            " case when %(finished)s then now() end)"
            " on conflict (uid) do update set status = excluded.status, phase = excluded.phase,"
            " finished_at = coalesce(jobs.finished_at, excluded.finished_at)",
            {
                "uid": meta["uid"],
                "namespace": meta["namespace"],
                "name": meta["name"],
                "spec": Jsonb(body.get("spec") or {}),
                "status": Jsonb(body.get("status") or {}),
                "phase": phase,
                "created": meta["creationTimestamp"],
                "finished": finished,
            },
        )

    async def finish(
        self, connection: psycopg.AsyncConnection[Any], body: Body, phase: str
    ) -> None:
        uid = body["metadata"]["uid"]
        outcome: ledger.Outcome = "settle" if phase == JobPhase.SUCCEEDED else "refund"
        if await ledger.finish(connection, uid, outcome):
            JOBS_FINALIZED.labels(phase).inc()
        url = (body.get("spec") or {}).get("webhookUrl")
        if url:
            job = JobPublic.from_resource(body)
            payload = {
                "type": "job.finished",
                "phase": phase,
                "job": job.model_dump(mode="json", by_alias=True),
            }
            await webhooks.enqueue(connection, uid, url, payload)

    # ------------------------------------------------------------ abandoned jobs

    def track_from_api(self, kind: str, body: Body, phase: str) -> None:
        meta = body["metadata"]
        ours = (meta.get("labels") or {}).get(CREATED_BY) == API
        going = kind == "DELETED" or meta.get("deletionTimestamp") or JobPhase(phase).finished
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
                logger.warning(
                    "deleting job %s/%s: created by the API, no credits reserved in %.0fs",
                    namespace, name, grace,
                )  # fmt: skip
                await self.runtime.kube.delete_job(namespace, name)
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
