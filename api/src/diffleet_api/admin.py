"""Entry point of `diffleet-admin`: platform operator tasks against the API's database.

diffleet-admin migrate
diffleet-admin check
diffleet-admin tenants create ID [--namespace NS] [--tier TIER] [--credits N]
diffleet-admin tenants list
diffleet-admin keys create TENANT [--role admin|member|viewer] [--name NAME]
diffleet-admin keys list TENANT
diffleet-admin keys revoke KEY_ID
diffleet-admin platform-keys create [--name NAME]   (the platform role: GET /v1/fleet)
diffleet-admin platform-keys list
diffleet-admin platform-keys revoke KEY_ID
diffleet-admin top-up TENANT AMOUNT [--note TEXT]
diffleet-admin token TENANT [--role ROLE] [--subject SUB] [--ttl SECONDS]   (HS256 JWT)
diffleet-admin purge-tenant NAMESPACE [--history]
diffleet-admin drain [--namespace NS] [--configmap NAME] [--job-namespace NS...] [--timeout S]
                     [--remove-pools SELECTOR]
diffleet-admin resume [--namespace NS] [--configmap NAME]
"""

import argparse
import asyncio
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from diffleet_api import db, drain, platform_keys, retention, tenants
from diffleet_api.app import s3_client
from diffleet_api.kube import Kube
from diffleet_api.settings import JWT_AUDIENCE, get_api_settings
from diffleet_api.tokens import Role
from diffleet_core.dispatch_pause import DEFAULT_CONFIGMAP
from diffleet_core.logs import configure_logging
from diffleet_core.resources.generation_job import Tier
from diffleet_core.settings import get_settings
from diffleet_core.storage import tenant_prefix


def connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(get_settings().database_url, connect_timeout=db.CONNECT_TIMEOUT_SECONDS)


def check_database() -> int:
    """Connects to the configured PostgreSQL and prints its version."""
    try:
        with connect() as connection:
            row = connection.execute("show server_version").fetchone()
    except psycopg.OperationalError as error:
        print(f"database: unreachable: {error}", file=sys.stderr)
        return 1
    print(f"database: PostgreSQL {row[0] if row else 'unknown'}")
    return 0


def migrate() -> int:
    applied = db.migrate(get_settings().database_url)
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"database: up to date ({len(db.migrations())} migrations)")
    return 0


async def ensure_namespace(namespace: str, tier: Tier) -> None:
    kube = await Kube.connect(get_api_settings().request_timeout_seconds, 1)
    try:
        await kube.ensure_namespace(namespace, tier.value)
    finally:
        await kube.close()


def create_tenant(args: argparse.Namespace) -> int:
    tier = Tier(args.tier)
    namespace = args.namespace or args.id
    system_namespace = get_settings().system_namespace
    try:
        tenants.check_new_tenant(args.id, namespace, system_namespace)
    except ValueError as error:
        print(f"diffleet-admin: refused: {error}", file=sys.stderr)
        return 2
    credits = args.credits if args.credits is not None else get_api_settings().starting_credits
    if not args.skip_namespace:
        asyncio.run(ensure_namespace(namespace, tier))
    with connect() as connection:
        tenant = tenants.create_tenant(
            connection, args.id, namespace, tier, Decimal(str(credits)), system_namespace
        )
    print(
        f"tenant {tenant.id}: namespace {tenant.namespace}, tier {tenant.tier}, {credits} credits"
    )
    return 0


def list_tenants(_: argparse.Namespace) -> int:
    with connect() as connection:
        rows = connection.execute(
            "select id, namespace, tier, balance from tenants order by id"
        ).fetchall()
    for tenant_id, namespace, tier, balance in rows:
        print(f"{tenant_id}\tnamespace={namespace}\ttier={tier}\tbalance={balance}")
    return 0


def create_key(args: argparse.Namespace) -> int:
    with connect() as connection:
        key_id, key = tenants.create_key(connection, args.tenant, args.name, Role(args.role))
    print(
        f"key {key_id} ({args.role}) for {args.tenant}; shown once, store it now:", file=sys.stderr
    )
    print(key)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    with connect() as connection:
        for key in tenants.list_keys(connection, args.tenant):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            print(f"{key.id}\t{key.prefix}...\t{key.role}\t{key.name}\t{state}")
    return 0


def revoke_key(args: argparse.Namespace) -> int:
    with connect() as connection:
        if not tenants.revoke_key(connection, args.key_id):
            print(f"no active key {args.key_id}", file=sys.stderr)
            return 1
    print(f"key {args.key_id} revoked")
    return 0


def create_platform_key(args: argparse.Namespace) -> int:
    with connect() as connection:
        key_id, key = platform_keys.create(connection, args.name)
    print(f"platform key {key_id}; shown once, store it now:", file=sys.stderr)
    print(key)
    return 0


def list_platform_keys(_: argparse.Namespace) -> int:
    with connect() as connection:
        for key in platform_keys.listed(connection):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            print(f"{key.id}\t{key.prefix}...\t{key.name}\t{state}")
    return 0


def revoke_platform_key(args: argparse.Namespace) -> int:
    with connect() as connection:
        if not platform_keys.revoke(connection, args.key_id):
            print(f"no active platform key {args.key_id}", file=sys.stderr)
            return 1
    print(f"platform key {args.key_id} revoked")
    return 0


def top_up(args: argparse.Namespace) -> int:
    try:
        amount = Decimal(args.amount)
    except InvalidOperation:
        print(f"amount {args.amount!r} is not a number", file=sys.stderr)
        return 2
    with connect() as connection:
        try:
            balance = tenants.top_up(connection, args.tenant, amount, args.note)
        except LookupError as error:
            print(error, file=sys.stderr)
            return 1
    print(f"{args.tenant}: balance {balance}")
    return 0


def mint_token(args: argparse.Namespace) -> int:
    settings = get_api_settings()
    if not settings.jwt_secret:
        print("DIFFLEET_API_JWT_SECRET is empty: HS256 tokens are off", file=sys.stderr)
        return 1
    now = int(time.time())
    claims = {
        "sub": args.subject,
        "tenant": args.tenant,
        "role": Role(args.role).value,
        "aud": JWT_AUDIENCE,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + args.ttl,
    }
    print(jwt.encode(claims, settings.jwt_secret, algorithm="HS256"))
    return 0


def purge_tenant(args: argparse.Namespace) -> int:
    namespace = args.namespace
    if not tenants.TENANT_ID.match(namespace):
        print(f"diffleet-admin: refused: {namespace!r} is not a namespace name", file=sys.stderr)
        return 2
    s3 = s3_client(get_api_settings().request_timeout_seconds)
    try:
        removed = retention.purge_tenant_objects(s3, get_settings().buckets, namespace)
    except (BotoCoreError, ClientError, retention.PurgeError) as error:
        print(f"diffleet-admin: purge of {namespace} stopped: {error}", file=sys.stderr)
        return 1
    for bucket, count in removed.items():
        print(f"s3://{bucket}/{tenant_prefix(namespace)}: {count} objects removed")
    if args.history:
        with connect() as connection:
            history = retention.purge_history(connection, namespace)
        print(
            f"history: {history.jobs} jobs and {history.webhook_deliveries} webhook deliveries"
            " removed"
        )
    return 0


async def connect_kube() -> Kube:
    return await Kube.connect(get_api_settings().request_timeout_seconds, 1)


async def drain_dispatch(args: argparse.Namespace) -> int:
    kube = await connect_kube()
    deadline = time.monotonic() + args.timeout
    try:
        await drain.set_paused(kube, args.namespace, args.configmap, paused=True)
        print(f"dispatch paused (ConfigMap {args.namespace}/{args.configmap})")
        busy = await drain.wait_until_idle(kube, args.job_namespace, within=args.timeout)
        if busy:
            print(f"not drained within {args.timeout:g}s: {', '.join(busy)}", file=sys.stderr)
            return 1
        print("drained: no job is Scheduled or Running")
        if args.remove_pools:
            left = await drain.remove_pools(
                kube, args.remove_pools, within=max(0.0, deadline - time.monotonic())
            )
            if left:
                print(f"GPUPools not removed in time: {', '.join(left)}", file=sys.stderr)
                return 1
            print(f"GPUPools removed: those labelled {args.remove_pools}")
    finally:
        await kube.close()
    return 0


async def resume_dispatch(args: argparse.Namespace) -> int:
    kube = await connect_kube()
    try:
        await drain.set_paused(kube, args.namespace, args.configmap, paused=False)
    finally:
        await kube.close()
    print(f"dispatch resumed (ConfigMap {args.namespace}/{args.configmap})")
    return 0


def add_pause_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--namespace", default=get_settings().system_namespace, help="the operator's namespace"
    )
    command.add_argument(
        "--configmap", default=DEFAULT_CONFIGMAP, help="its DIFFLEET_OPERATOR_DISPATCH_CONFIGMAP"
    )


def add_platform_key_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    keys = commands.add_parser(
        "platform-keys", help="keys of the platform role (GET /v1/fleet; no tenant's work)"
    ).add_subparsers(dest="action", required=True)
    new = keys.add_parser("create", help="create a platform key (printed once)")
    new.add_argument("--name", default="platform")
    new.set_defaults(run=create_platform_key)
    keys.add_parser("list", help="list the platform keys").set_defaults(run=list_platform_keys)
    revoke = keys.add_parser("revoke", help="revoke a platform key")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(run=revoke_platform_key)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="diffleet-admin", description="diffleet administration")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check that the API's database is reachable")
    commands.add_parser("migrate", help="apply the database migrations")

    tenant = commands.add_parser("tenants", help="tenants").add_subparsers(
        dest="action", required=True
    )
    create = tenant.add_parser("create", help="create a tenant (and its namespace)")
    create.add_argument("id")
    create.add_argument("--namespace", help="default: the tenant id")
    create.add_argument("--tier", choices=[t.value for t in Tier], default=Tier.FREE.value)
    create.add_argument("--credits", type=float, help="starting balance (default from settings)")
    create.add_argument("--skip-namespace", action="store_true", help="do not touch Kubernetes")
    create.set_defaults(run=create_tenant)
    tenant.add_parser("list", help="list tenants").set_defaults(run=list_tenants)

    key = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    new = key.add_parser("create", help="create a key (printed once)")
    new.add_argument("tenant")
    new.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    new.add_argument("--name", default="default")
    new.set_defaults(run=create_key)
    listed = key.add_parser("list", help="list a tenant's keys")
    listed.add_argument("tenant")
    listed.set_defaults(run=list_keys)
    revoke = key.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(run=revoke_key)
    add_platform_key_commands(commands)

    topup = commands.add_parser("top-up", help="add credits to a tenant")
    topup.add_argument("tenant")
    topup.add_argument("amount")
    topup.add_argument("--note", default="top-up")
    topup.set_defaults(run=top_up)

    token = commands.add_parser("token", help="mint an HS256 JWT with the configured secret")
    token.add_argument("tenant")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    token.add_argument("--subject", default="admin-cli")
    token.add_argument("--ttl", type=int, default=3600)
    token.set_defaults(run=mint_token)

    purge = commands.add_parser(
        "purge-tenant", help="delete a tenant's outputs and uploads from S3 (and its history)"
    )
    purge.add_argument("namespace", help="the tenant's namespace")
    purge.add_argument("--history", action="store_true", help="also delete its job history")
    purge.set_defaults(run=purge_tenant)

    paused = commands.add_parser(
        "drain", help="pause dispatch, then wait until no job is Scheduled or Running"
    )
    add_pause_arguments(paused)
    paused.add_argument(
        "--job-namespace",
        action="append",
        default=[],
        help="a namespace whose jobs the operator serves (repeat; default: all)",
    )
    paused.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    paused.add_argument(
        "--remove-pools",
        metavar="SELECTOR",
        help="then delete the GPUPools with these labels and wait until they are gone"
        " (an uninstall, while their operator still runs)",
    )
    paused.set_defaults(run=lambda args: asyncio.run(drain_dispatch(args)))
    resumed = commands.add_parser("resume", help="resume dispatch")
    add_pause_arguments(resumed)
    resumed.set_defaults(run=lambda args: asyncio.run(resume_dispatch(args)))
    return root


def main() -> None:
    configure_logging("admin")
    args = parser().parse_args()
    if args.command == "check":
        sys.exit(check_database())
    if args.command == "migrate":
        sys.exit(migrate())
    sys.exit(args.run(args))
