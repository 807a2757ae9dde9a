"""PostgreSQL: the connection pool and the versioned migrations (migrations/NNNN_*.sql).

The pool's connections are in autocommit: a statement on its own is its own transaction
(one round trip, no BEGIN and COMMIT around it); statements that must commit together
run in `connection.transaction()`.

Migrations are applied in order, each in its own transaction, under an advisory lock so
that replicas starting together apply each one once.
"""

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

logger = logging.getLogger(__name__)

MIGRATION_LOCK = 7_401_105_001  # pg_advisory_xact_lock key: "migrations of diffleet-api"
MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
CONNECT_TIMEOUT_SECONDS = 5
RECONNECT_SECONDS = 10

Pool = AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The packaged migrations, in version order."""
    found = []
    for entry in resources.files("diffleet_api.migrations").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


def migrate(database_url: str) -> list[Migration]:
    """Applies the migrations not yet applied; returns those it applied."""
    applied = []
    with psycopg.connect(database_url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
        connection.execute(
            "create table if not exists schema_migrations ("
            " version integer primary key, name text not null,"
            " applied_at timestamptz not null default now())"
        )
        connection.commit()
        for migration in migrations():
            with connection.transaction():
                connection.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                done = connection.execute(
                    "select 1 from schema_migrations where version = %s", (migration.version,)
                ).fetchone()
                if done:
                    continue
                connection.execute(migration.sql.encode())
                connection.execute(
                    "insert into schema_migrations (version, name) values (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration)
                logger.info("applied migration %04d_%s", migration.version, migration.name)
    return applied


async def open_pool(database_url: str, min_size: int, max_size: int, wait: float) -> Pool:
    """A pool that outlives PostgreSQL's restarts: a connection is checked as it is taken
    (one that died idle is replaced, not handed to a request); a request waits at most
    `wait` seconds for one (then PoolTimeout, a 503); a lost connection is reconnected with
    backoff for at most RECONNECT_SECONDS, after which the next request that waits starts
    a fresh attempt at once (rather than after the backoff's growing pause)."""
    pool: Pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "autocommit": True},
        timeout=wait,
        check=AsyncConnectionPool.check_connection,
        reconnect_timeout=RECONNECT_SECONDS,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=30)
    except PoolTimeout:
        await pool.close()  # its workers would keep connecting in the background
        raise
    return pool
