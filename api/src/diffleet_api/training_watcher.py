"""The training watcher: the credits of TrainingJobs, beside the job watcher (one per API
replica, one leading by its own PostgreSQL advisory lock). The leader follows every
TrainingJob and:

    1. settles (Succeeded) or refunds (Failed, Cancelled, deleted before finishing) the
       credits of a training the API created, once (its `trainings` row moves from
       reserved under a row lock, with one ledger row);
    2. refunds, after a (re)list, the reserved trainings missing from it: deleted while
       no watch ran;
    3. abandons and cancels the trainings the API created whose reservation never
       committed (the replica died between the create and the commit), once older than
       `abandon_unreserved_after_seconds`: nobody pays for them, so they must not run.

A training whose handling fails by its own fault is set aside (isolation.py) and the
watch goes on; a dependency's failure stops the leader, which starts over after a pause.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_api import leadership
from diffleet_api.isolation import Loop, Quarantine, dependency_failed, reason
from diffleet_api.kube import API, CREATED_BY, Body
from diffleet_api.metrics import TRAININGS_ABANDONED, TRAININGS_FINALIZED
from diffleet_api.runtime import Runtime
from diffleet_api.watcher import DELETED, RETRY_SECONDS, WATCH_SECONDS
from diffleet_core.logs import job_context
from diffleet_core.resources import training_job
from diffleet_core.resources.training_job import TrainingPhase

logger = logging.getLogger(__name__)

FINISHED = frozenset(phase.value for phase in TrainingPhase if phase.finished)
LOCK_SUFFIX = ":trainings"
# creationTimestamp has whole seconds, from the API server's clock, not PostgreSQL's: a
# training created this close to a list's start may be missing from it yet not deleted.
CLOCK_MARGIN_SECONDS = 5


def ending(kind: str, body: Body) -> str | None:
    """The phase a training ended at (DELETED when deleted before finishing), or None
    while it runs."""
    status = body.get("status")
    phase = status.get("phase") if isinstance(status, dict) else None
    if phase in FINISHED:
        return str(phase)
    return DELETED if kind == "DELETED" else None


async def finish(connection: psycopg.AsyncConnection[Any], uid: str, phase: str) -> bool:
    """Settles (Succeeded) or refunds (any other end) the training's credits, once; False
    when none are reserved (not the API's, or finished already)."""
    refund = phase != TrainingPhase.SUCCEEDED
    async with connection.transaction():
        cursor = await connection.execute(
            "select tenant_id, cost, name from trainings"
            " where uid = %s and credits = 'reserved' for update",
            (uid,),
        )
        row = await cursor.fetchone()
        if row is None:
            return False
        tenant_id, cost, name = row
        amount = cost if refund else 0
        await connection.execute(
            "update trainings set credits = %s, phase = %s, finished_at = now() where uid = %s",
            ("refunded" if refund else "settled", phase, uid),
        )
        await connection.execute(
            "update tenants set balance = balance + %s where id = %s", (amount, tenant_id)
        )
        await connection.execute(
            "insert into ledger (tenant_id, kind, amount, job_uid, note)"
            " values (%s, %s, %s, %s, %s)",
            (tenant_id, "refund" if refund else "settle", amount, uid, f"training {name}"),
        )
    return True


class TrainingWatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.lock_name = self.settings.watcher_lock + LOCK_SUFFIX
        # The API's unfinished trainings: uid to (namespace, name, creation time).
        self.unfinished_from_api: dict[str, tuple[str, str, datetime]] = {}
        self.quarantined = Quarantine(Loop.TRAINING_WATCHER)

    async def run(self) -> None:
        """Forever: wait to lead, then follow trainings until leadership or a dependency
        fails; then start over after a pause."""
        while True:
            try:
                await self.lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("training watcher stopped; starting over in %.0fs", RETRY_SECONDS)
            self.unfinished_from_api.clear()
            await asyncio.sleep(RETRY_SECONDS)

    async def lead(self) -> None:
        namespaces: list[str | None] = [*self.settings.watch_namespaces] or [None]
        await leadership.lead(
            "training watcher",
            self.runtime.platform.database_url,
            self.lock_name,
            [*(self.follow(namespace) for namespace in namespaces), self.sweep()],
        )

    # ------------------------------------------------------------ following trainings

    async def follow(self, namespace: str | None) -> None:
        kube = self.runtime.kube
        while True:
            listed_at = await leadership.database_now(self.runtime.pool)
            items, version = await kube.list_all_trainings(namespace)
            for body in items:
                await self.handle("ADDED", body)
            await self.catch_up_deleted(
                namespace, [body["metadata"]["uid"] for body in items], listed_at
            )
            try:
                while True:
                    async for kind, body in kube.job_events(
                        namespace, version, WATCH_SECONDS, plural=training_job.PLURAL
                    ):
                        version = body.get("metadata", {}).get("resourceVersion", version)
                        if kind == "ERROR":
                            raise ApiException(status=body.get("code", 500))
                        if kind != "BOOKMARK":
                            await self.handle(kind, body)
            except ApiException as error:
                if error.status != 410:
                    raise
                logger.info("training watch of %s expired; listing again", namespace or "all")

    async def catch_up_deleted(
        self, namespace: str | None, listed: list[str], listed_at: datetime
    ) -> None:
        """Refunds the trainings created (well) before the list began yet not in it."""
        async with self.runtime.pool.connection() as connection:
            cursor = await connection.execute(
                "select uid from trainings where credits = 'reserved'"
                " and created_at < %s - make_interval(secs => %s)"
                " and (%s::text is null or namespace = %s) and not uid = any(%s)",
                (listed_at, CLOCK_MARGIN_SECONDS, namespace, namespace, listed),
            )
            for (uid,) in await cursor.fetchall():
                if await finish(connection, uid, DELETED):
                    TRAININGS_FINALIZED.labels(DELETED).inc()

    async def handle(self, kind: str, body: Body) -> None:
        """Observes one event; sets the training aside when that fails by its own fault."""
        meta = body["metadata"]
        with job_context(meta["uid"]):
            try:
                await self.observe(kind, body)
            except Exception as error:
                if dependency_failed(error):
                    raise
                record = f"training {meta.get('namespace')}/{meta.get('name')}"
                self.quarantined.add(meta["uid"], record, reason(error))

    async def observe(self, kind: str, body: Body) -> None:
        meta = body["metadata"]
        phase = ending(kind, body)
        self.track_from_api(meta, phase)
        if phase is None:
            return
        async with self.runtime.pool.connection() as connection:
            if await finish(connection, meta["uid"], phase):
                TRAININGS_FINALIZED.labels(phase).inc()

    # ------------------------------------------------------------ abandoned trainings

    def track_from_api(self, meta: dict[str, Any], phase: str | None) -> None:
        ours = (meta.get("labels") or {}).get(CREATED_BY) == API
        if ours and phase is None and not meta.get("deletionTimestamp"):
            created = datetime.fromisoformat(meta["creationTimestamp"])
            self.unfinished_from_api[meta["uid"]] = (meta["namespace"], meta["name"], created)
        else:
            self.unfinished_from_api.pop(meta["uid"], None)

    async def sweep(self) -> None:
        grace = self.settings.abandon_unreserved_after_seconds
        while True:
            await asyncio.sleep(grace / 2)
            old = datetime.now(UTC) - timedelta(seconds=grace)
            due = {uid: place for uid, place in self.unfinished_from_api.items() if place[2] < old}
            if due:
                await self.abandon(due)

    async def abandon(self, due: dict[str, tuple[str, str, datetime]]) -> None:
        """Marks abandoned those of `due` that have no reservation (so a late one fails)
        and cancels them; the others are paid for and forgotten here."""
        rows = [(uid, namespace, name, created) for uid, (namespace, name, created) in due.items()]
        async with self.runtime.pool.connection() as connection:
            cursor = await connection.execute(
                "insert into trainings (uid, namespace, name, cost, credits, created_at)"
                " select uid, namespace, name, 0, 'abandoned', created"
                " from unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])"
                " as due (uid, namespace, name, created)"
                " on conflict (uid) do nothing returning uid, namespace, name",
                tuple(list(column) for column in zip(*rows, strict=True)),
            )
            abandoned = await cursor.fetchall()
        for uid in due:
            self.unfinished_from_api.pop(uid, None)
        for uid, namespace, name in abandoned:
            logger.warning("cancelling training %s/%s: no credits reserved for it", namespace, name)
            await self.handle_cancel(uid, namespace, name)

    async def handle_cancel(self, uid: str, namespace: str, name: str) -> None:
        try:
            await self.runtime.kube.cancel_training(namespace, name)
        except Exception as error:
            if dependency_failed(error):
                raise
            self.quarantined.add(uid, f"abandoned training {namespace}/{name}", reason(error))
            return
        TRAININGS_ABANDONED.inc()
