"""Entry point of `diffleet-admin`: operator tasks against the API's database."""

import argparse
import sys

import psycopg

from diffleet_core.settings import get_settings


def check_database() -> int:
    """Connects to the configured PostgreSQL and prints its version."""
    try:
        with psycopg.connect(get_settings().database_url, connect_timeout=5) as connection:
            row = connection.execute("show server_version").fetchone()
    except psycopg.OperationalError as error:
        print(f"database: unreachable: {error}", file=sys.stderr)
        return 1
    print(f"database: PostgreSQL {row[0] if row else 'unknown'}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="diffleet-admin", description="diffleet administration")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check that the API's database is reachable")
    args = parser.parse_args()
    if args.command == "check":
        sys.exit(check_database())
