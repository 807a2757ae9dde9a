"""Entry point of `diffleet-api`: serves the FastAPI app with uvicorn, on asyncio's event
loop with httptools' HTTP parser (C: less CPU per request than h11, bench/results/api.md).

Not uvloop, although it saved about 0.5 ms of CPU per request: when a connection that
aiohttp (the Kubernetes client) opens is cancelled, uvloop closes its descriptor without
detaching the socket object, whose finalizer later closes whatever reused that number
(MagicStack/uvloop#738). An API server outage then broke unrelated sockets of the
process: webhook deliveries timed out on connections the kernel had made."""

import argparse
import sys

import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from diffleet_api.app import create_app
from diffleet_api.settings import ApiSettings, get_api_settings
from diffleet_core import telemetry
from diffleet_core.logs import configure_logging
from diffleet_core.settings import Credential, InsecureCredentialError, Settings, get_settings

# Probes and scrapes are no one's request: no trace for them.
UNTRACED_PATHS = "/healthz,/readyz,/metrics"


def check_credentials(settings: ApiSettings, platform: Settings) -> None:
    """Exits naming the variable when a credential the API holds is unset or a
    development one (outside development mode)."""
    try:
        platform.check_credentials(Credential.DATABASE, Credential.AMQP, Credential.S3)
        settings.check_credentials(platform.development_mode)
    except InsecureCredentialError as error:
        sys.exit(f"diffleet-api: {error}")


def traced(app: FastAPI) -> FastAPI:
    """A span per request (none for each ASGI message: a progress stream sends many) and
    per S3 call, when tracing is on."""
    if telemetry.setup_tracing("diffleet-api"):
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"]
        )
        BotocoreInstrumentor().instrument()  # type: ignore[no-untyped-call]
    return app


def main() -> None:
    settings = get_api_settings()
    parser = argparse.ArgumentParser(prog="diffleet-api", description="Serves the diffleet API.")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args()
    configure_logging("api")
    platform = get_settings()
    check_credentials(settings, platform)
    uvicorn.run(
        traced(create_app(settings, platform)),
        host=args.host,
        port=args.port,
        loop="asyncio",
        http="httptools",
        access_log=False,
        log_level="warning",
        # uvicorn's loggers go through configure_logging's handler, not its own.
        log_config=None,
    )
