"""Entry point of `diffleet-api`: serves the FastAPI app with uvicorn, on uvloop's event
loop with httptools' HTTP parser (both C: less CPU per request than asyncio's loop and
h11, bench/results/api.md)."""

import argparse
import logging

import uvicorn

from diffleet_api.app import create_app
from diffleet_api.settings import get_api_settings


def main() -> None:
    settings = get_api_settings()
    parser = argparse.ArgumentParser(prog="diffleet-api", description="Serves the diffleet API.")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
