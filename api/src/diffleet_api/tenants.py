"""Tenants and their API keys in PostgreSQL. A tenant owns one namespace and has a tier."""

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from diffleet_api.keys import key_hash, new_key, shown_prefix
from diffleet_api.ratelimits import GENERATIONS, REQUESTS, REQUESTS_WINDOW_SECONDS, Stored
from diffleet_api.tokens import Role
from diffleet_core import SYSTEM_NAMESPACE
from diffleet_core.resources.generation_job import Tier

TENANT_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A DNS label, as a namespace's name is."""
KUBERNETES_NAMESPACES = re.compile(r"^(kube-.*|default)$")
"""Kubernetes' own namespaces (kube-system, kube-public, kube-node-lease, ...) and
`default`, which holds whatever was created without a namespace: no tenant owns them."""


@dataclass(frozen=True)
class Tenant:
    id: str
    namespace: str
    tier: Tier

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Tenant":
        return cls(id=row["id"], namespace=row["namespace"], tier=Tier(row["tier"]))


@dataclass(frozen=True)
class Caller:
    """A tenant as authentication found it: its balance then, the tokens left in its
    requests bucket once this request took one (None: its tier has no request limit, or
    the bucket was empty), and its generations bucket's row (None: never written)."""

    tenant: Tenant
    balance: Decimal
    requests_left: float | None
    generations: Stored | None


@dataclass(frozen=True)
class KeyGrant:
    """Who a key speaks for."""

    caller: Caller
    role: Role
    key_id: int


@dataclass(frozen=True)
class KeyInfo:
    id: int
    tenant_id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


# Authentication is one statement: the caller's row, a token of its tenant's requests
# bucket taken by take_tokens (migration 0002), evaluated for the row found only (a tier
# without a request limit, absent from `capacities`, takes none), and the row of its
# generations bucket, read as it is (ratelimits.available refills it).
LIMITS = sql.SQL("""
    case when limits.requests is not null then
        take_tokens(t.id, %(requests)s, limits.requests, limits.requests / %(window)s, 1)
    end as requests_left,
    generations.tokens as generations_tokens,
    extract(epoch from clock_timestamp() - generations.updated_at) as generations_elapsed
""")
BUCKETS = sql.SQL("""
    cross join lateral (select (%(capacities)s::jsonb ->> t.tier)::double precision)
        as limits (requests)
    left join rate_buckets generations
        on generations.tenant_id = t.id and generations.name = %(generations)s
""")
BY_KEY = sql.SQL("""
select k.id as key_id, k.role, t.id, t.namespace, t.tier, t.balance, {limits}
from api_keys k join tenants t on t.id = k.tenant_id {buckets}
where k.hash = %(hash)s and k.revoked_at is null
""").format(limits=LIMITS, buckets=BUCKETS)
BY_TENANT = sql.SQL("""
select t.id, t.namespace, t.tier, t.balance, {limits}
from tenants t {buckets}
where t.id = %(tenant)s
""").format(limits=LIMITS, buckets=BUCKETS)


def bucket_parameters(capacities: dict[str, int]) -> dict[str, Any]:
    return {
        "requests": REQUESTS,
        "window": REQUESTS_WINDOW_SECONDS,
        "capacities": Jsonb(capacities),
        "generations": GENERATIONS,
    }


def caller_of(row: dict[str, Any]) -> Caller:
    requests, generations = row["requests_left"], row["generations_tokens"]
    return Caller(
        Tenant.from_row(row),
        row["balance"],
        None if requests is None else float(requests),
        None if generations is None else Stored(generations, float(row["generations_elapsed"])),
    )


async def authenticate_key(
    connection: psycopg.AsyncConnection[Any], key: str, capacities: dict[str, int]
) -> KeyGrant | None:
    """The tenant and role of an unrevoked key, or None; takes a request token of the
    tenant (`capacities`: requests per minute by tier)."""
    cursor = connection.cursor(row_factory=dict_row)
    await cursor.execute(BY_KEY, {"hash": key_hash(key)} | bucket_parameters(capacities))
    row = await cursor.fetchone()
    if row is None:
        return None
    return KeyGrant(caller=caller_of(row), role=Role(row["role"]), key_id=row["key_id"])


async def authenticate_tenant(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, capacities: dict[str, int]
) -> Caller | None:
    """The tenant of a JWT, or None; takes a request token of the tenant."""
    cursor = connection.cursor(row_factory=dict_row)
    await cursor.execute(BY_TENANT, {"tenant": tenant_id} | bucket_parameters(capacities))
    row = await cursor.fetchone()
    return caller_of(row) if row else None


def check_new_tenant(tenant_id: str, namespace: str, system_namespace: str) -> None:
    """Raises ValueError, saying why, unless the id and the namespace are DNS labels and
    the namespace is not the platform's (`system_namespace`) nor Kubernetes' own."""
    if not TENANT_ID.match(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r}: lowercase letters, digits and '-' only")
    if not TENANT_ID.match(namespace):
        raise ValueError(f"namespace {namespace!r}: lowercase letters, digits and '-' only")
    if namespace == system_namespace or KUBERNETES_NAMESPACES.match(namespace):
        raise ValueError(
            f"namespace {namespace!r} is a system namespace (the platform's {system_namespace},"
            " kube-* or default): a tenant needs a namespace of its own"
        )


def create_tenant(
    connection: psycopg.Connection[Any],
    tenant_id: str,
    namespace: str,
    tier: Tier,
    starting_credits: Decimal,
    system_namespace: str = SYSTEM_NAMESPACE,
) -> Tenant:
    """Creates a tenant with its starting balance (a top-up in the ledger)."""
    check_new_tenant(tenant_id, namespace, system_namespace)
    with connection.transaction():
        connection.execute(
            "insert into tenants (id, namespace, tier) values (%s, %s, %s)",
            (tenant_id, namespace, tier.value),
        )
        if starting_credits:
            top_up(connection, tenant_id, starting_credits, "starting balance")
    return Tenant(tenant_id, namespace, tier)


def top_up(
    connection: psycopg.Connection[Any], tenant_id: str, amount: Decimal, note: str
) -> Decimal:
    """Adds (or, negative, removes) credits; returns the new balance."""
    with connection.transaction():
        row = connection.execute(
            "update tenants set balance = balance + %s where id = %s returning balance",
            (amount, tenant_id),
        ).fetchone()
        if row is None:
            raise LookupError(f"no tenant {tenant_id!r}")
        connection.execute(
            "insert into ledger (tenant_id, kind, amount, note) values (%s, 'topup', %s, %s)",
            (tenant_id, amount, note),
        )
    balance: Decimal = row[0]
    return balance


def create_key(
    connection: psycopg.Connection[Any], tenant_id: str, name: str, role: Role
) -> tuple[int, str]:
    """A new key for the tenant: returns its id and the key itself (shown only now)."""
    key = new_key()
    row = connection.execute(
        "insert into api_keys (tenant_id, name, role, prefix, hash)"
        " values (%s, %s, %s, %s, %s) returning id",
        (tenant_id, name, role.value, shown_prefix(key), key_hash(key)),
    ).fetchone()
    assert row is not None
    connection.commit()
    key_id: int = row[0]
    return key_id, key


def revoke_key(connection: psycopg.Connection[Any], key_id: int) -> bool:
    done = connection.execute(
        "update api_keys set revoked_at = now() where id = %s and revoked_at is null", (key_id,)
    ).rowcount
    connection.commit()
    return done == 1


def list_keys(connection: psycopg.Connection[Any], tenant_id: str) -> list[KeyInfo]:
    cursor = connection.cursor(row_factory=dict_row)
    cursor.execute(
        "select id, tenant_id, name, role, prefix, created_at, revoked_at"
        " from api_keys where tenant_id = %s order by id",
        (tenant_id,),
    )
    return [KeyInfo(**{**row, "role": Role(row["role"])}) for row in cursor.fetchall()]
