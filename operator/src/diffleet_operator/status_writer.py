"""Coalesces a job's status writes: the transitions that come within a short window go to
the API server as one merge patch.

A job's first patch opens a batch, written once the window (`status_window_seconds`) has
passed since then, so that the status lags what happened by at most the window plus the
write. Scheduled, Running and progress wait out the window; any other phase (Succeeded,
Failed, Cancelled, a requeue's Queued) ends it and the batch is written at once, so a
short job's Scheduled, Running and Succeeded land in one write.

Each patch is judged against the batch before it merges (`status.may_write`: a late
"started" after a pending "succeeded" is dropped there), and the batch is judged again
against the stored job when written (`Kube.patch_job_status`). Every submitter gets the
outcome of the write that carried its patch: its message is acknowledged only then. One
job's batches are written in order, one at a time; a batch that the API server refuses
for good is written patch by patch, so that only the patch at fault fails. A transient
failure fails every patch of the batch: each submitter retries as it would a write of its
own.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from diffleet_core.resources.generation_job import GenerationJobStatus, JobPhase
from diffleet_operator import status
from diffleet_operator.cache.jobs import JobCache
from diffleet_operator.quarantine import transient

logger = logging.getLogger(__name__)

# Writes a patch on a job (namespace, name, patch, the job as last seen): Kube.patch_job_status.
Write = Callable[[str, str, dict[str, Any], Mapping[str, Any] | None], Awaitable[bool]]

# Batches written at once, all jobs together.
WRITES_IN_FLIGHT = 16
# The phases that wait out the window for what follows them.
_WAITING = frozenset({JobPhase.SCHEDULED, JobPhase.RUNNING})


def merge(pending: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any] | None:
    """`patch` applied after `pending`, as one merge patch; None when it may not follow it
    (`status.may_write` on the status that `pending` describes). Each field a patch sets
    is whole, so the later one wins, except the conditions: each patch computed its list
    from the stored status, so they merge by type, the later one's winning."""
    described = GenerationJobStatus.model_validate(
        {"phase": pending.get("phase"), "attempts": pending.get("attempts") or 0}
    )
    if not status.may_write(described, dict(patch)):
        return None
    merged = {**pending, **patch}
    if pending.get("conditions") and patch.get("conditions"):
        by_type = {c["type"]: c for c in pending["conditions"]}
        by_type |= {c["type"]: c for c in patch["conditions"]}
        merged["conditions"] = list(by_type.values())
    return merged


def ends_window(patch: Mapping[str, Any]) -> bool:
    """Whether the patch's batch is written at once: nothing that could follow soon is
    worth waiting for after a final phase or a requeue."""
    phase = patch.get("phase")
    return phase is not None and JobPhase(phase) not in _WAITING


@dataclass
class _Batch:
    namespace: str
    name: str
    uid: str
    patch: dict[str, Any]
    parts: list[tuple[dict[str, Any], "asyncio.Future[bool]"]]
    due: asyncio.Event = field(default_factory=asyncio.Event)


class StatusWriter:
    def __init__(self, write: Write, window: float, jobs: JobCache) -> None:
        self._write = write
        self.window = window
        self._jobs = jobs
        self._open: dict[str, _Batch] = {}
        self._flushing: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(WRITES_IN_FLIGHT)

    def submit(
        self, namespace: str, name: str, uid: str, patch: dict[str, Any]
    ) -> "asyncio.Future[bool]":
        """Adds the patch to the job's open batch (opening one); the future is its write's
        outcome: True once written, False when dropped (it may not land, or the job is
        gone), the error when the write failed."""
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        batch = self._open.get(uid)
        if batch is None:
            batch = _Batch(namespace, name, uid, dict(patch), [(patch, written)])
            self._open[uid] = batch
            task = asyncio.create_task(self._flush(uid, batch, self._flushing.get(uid)))
            self._flushing[uid] = task
            task.add_done_callback(partial(self._flushed, uid))
        else:
            merged = merge(batch.patch, patch)
            if merged is None:
                written.set_result(False)
                return written
            batch.patch = merged
            batch.parts.append((patch, written))
        if ends_window(patch):
            batch.due.set()
        return written

    async def write(self, namespace: str, name: str, uid: str, patch: dict[str, Any]) -> bool:
        """Submits the patch and waits for its write."""
        return await self.submit(namespace, name, uid, patch)

    async def flush(self, uid: str) -> None:
        """Writes the job's open batch now and waits until its writes so far are done, so
        that a read after it sees them."""
        if batch := self._open.get(uid):
            batch.due.set()
        if task := self._flushing.get(uid):
            await asyncio.wait([task])

    async def close(self, within: float) -> None:
        """Writes every open batch now and waits (at most `within` seconds) for them; what
        is left unwritten is cancelled, its messages unacknowledged."""
        for batch in self._open.values():
            batch.due.set()
        tasks = list(self._flushing.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=within)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _flushed(self, uid: str, task: asyncio.Task[None]) -> None:
        if self._flushing.get(uid) is task:
            del self._flushing[uid]

    async def _flush(self, uid: str, batch: _Batch, previous: asyncio.Task[None] | None) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch.due.wait(), timeout=self.window)
            if previous is not None:
                await asyncio.wait([previous])  # the job's writes in order
            async with self._slots:
                if self._open.get(uid) is batch:
                    del self._open[uid]  # later patches open the next batch
                await self._write_batch(batch)
        finally:
            if self._open.get(uid) is batch:
                del self._open[uid]
            for _, written in batch.parts:
                written.cancel()  # cancelled before its write: no-op once resolved

    async def _write_patch(self, batch: _Batch, patch: dict[str, Any]) -> bool:
        """Writes on the job as the watch last showed it (a stale one costs a read)."""
        known = self._jobs.get(batch.uid)
        return await self._write(batch.namespace, batch.name, patch, known.body if known else None)

    async def _write_batch(self, batch: _Batch) -> None:
        try:
            outcome = await self._write_patch(batch, batch.patch)
        except Exception as error:  # noqa: BLE001 - every submitter gets the failure
            if len(batch.parts) > 1 and not transient(error):
                logger.info(
                    "status write of %s/%s refused (%s): its %d patches one by one",
                    batch.namespace,
                    batch.name,
                    error,
                    len(batch.parts),
                )
                await self._write_apart(batch)
                return
            for _, written in batch.parts:
                _resolve(written, error=error)
            return
        for _, written in batch.parts:
            _resolve(written, outcome)

    async def _write_apart(self, batch: _Batch) -> None:
        for patch, written in batch.parts:
            try:
                _resolve(written, await self._write_patch(batch, patch))
            except Exception as error:  # noqa: BLE001 - the outcome of this patch alone
                _resolve(written, error=error)


def _resolve(
    written: "asyncio.Future[bool]", outcome: bool = False, *, error: Exception | None = None
) -> None:
    """Sets the outcome, unless its submitter has stopped waiting (cancelled)."""
    if written.done():
        return
    if error is None:
        written.set_result(outcome)
    else:
        written.set_exception(error)
