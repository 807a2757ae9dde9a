"""Keys of the platform role: an operator of the platform, not of a tenant. Such a key
reads the fleet and nothing of any tenant's work: it is in no tenant's `api_keys`, so
every tenant route refuses it as an unknown key. Only `diffleet-admin platform-keys`
creates them (shown once, stored as a SHA-256 hash, as tenants' keys are)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from diffleet_api.keys import key_hash, new_key, shown_prefix


@dataclass(frozen=True)
class PlatformKeyInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


async def authenticate(connection: psycopg.AsyncConnection[Any], key: str) -> int | None:
    """The id of the unrevoked platform key `key`, or None."""
    cursor = await connection.execute(
        "select id from platform_keys where hash = %s and revoked_at is null", (key_hash(key),)
    )
    row = await cursor.fetchone()
    return None if row is None else int(row[0])


def create(connection: psycopg.Connection[Any], name: str) -> tuple[int, str]:
    """A new platform key: its id and the key itself (shown only now)."""
    key = new_key()
    row = connection.execute(
        "insert into platform_keys (name, prefix, hash) values (%s, %s, %s) returning id",
        (name, shown_prefix(key), key_hash(key)),
    ).fetchone()
    assert row is not None
    connection.commit()
    return int(row[0]), key


def revoke(connection: psycopg.Connection[Any], key_id: int) -> bool:
    done = connection.execute(
        "update platform_keys set revoked_at = now() where id = %s and revoked_at is null",
        (key_id,),
    ).rowcount
    connection.commit()
    return done == 1


def listed(connection: psycopg.Connection[Any]) -> list[PlatformKeyInfo]:
    cursor = connection.cursor(row_factory=dict_row)
    cursor.execute("select id, name, prefix, created_at, revoked_at from platform_keys order by id")
    return [PlatformKeyInfo(**row) for row in cursor.fetchall()]
