"""Entry point of `diffleet-worker`."""

import argparse
import sys

from diffleet_core.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="diffleet-worker",
        description="Runs a diffleet GPU worker (the pipelines arrive with issue 4).",
    )
    parser.add_argument("--print-settings", action="store_true", help="print settings and exit")
    args = parser.parse_args()
    if args.print_settings:
        print(get_settings().model_dump_json(indent=2))
        return
    sys.exit("diffleet-worker: no pipelines yet; issue 4 builds them")
