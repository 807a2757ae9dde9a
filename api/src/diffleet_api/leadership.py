"""Leadership among the API's replicas, for the loops one of them runs (the job and the
training watchers): a PostgreSQL advisory lock held by a connection of its own. If that
connection dies the lock goes with it, and the leader's work stops with
LeadershipLostError."""

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from datetime import datetime
from typing import Any

import psycopg

from diffleet_api.db import Pool

logger = logging.getLogger(__name__)

LEADER_CHECK_SECONDS = 2.0


class LeadershipLostError(Exception):
    """The connection that held the advisory lock failed."""


async def lead(
    who: str, database_url: str, lock_name: str, work: Iterable[Coroutine[Any, Any, None]]
) -> None:
    """Waits for the lock, then runs `work` while it is held (logging "`who` leading");
    returns or raises when a task of the work fails or the lock is lost (the others are
    cancelled)."""
    pending = list(work)
    try:
        async with await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, connect_timeout=5
        ) as lock:
            await acquire(lock, lock_name)
            logger.info("%s leading (lock %s)", who, lock_name)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(keep(lock))
                while pending:
                    tasks.create_task(pending.pop())
    finally:
        for never_started in pending:
            never_started.close()


async def acquire(lock: psycopg.AsyncConnection[Any], lock_name: str) -> None:
    while True:
        cursor = await lock.execute("select pg_try_advisory_lock(hashtext(%s))", (lock_name,))
        row = await cursor.fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(LEADER_CHECK_SECONDS)


async def keep(lock: psycopg.AsyncConnection[Any]) -> None:
    """Raises LeadershipLostError when the connection that holds the lock fails."""
    while True:
        await asyncio.sleep(LEADER_CHECK_SECONDS)
        try:
            await asyncio.wait_for(lock.execute("select 1"), LEADER_CHECK_SECONDS * 2)
        except (psycopg.Error, TimeoutError) as error:
            raise LeadershipLostError(str(error)) from error


async def database_now(pool: Pool) -> datetime:
    """PostgreSQL's clock: what a list's start is compared with in the ledger."""
    async with pool.connection() as connection:
        cursor = await connection.execute("select now()")
        row = await cursor.fetchone()
    assert row is not None
    now: datetime = row[0]
    return now
