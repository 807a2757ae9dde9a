"""Prometheus metrics of the API, and the ASGI middleware that times every request by
route template and status (and adds the RateLimit-* headers the auth step computed)."""

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry()
REQUEST_SECONDS = Histogram(
    "diffleet_api_request_seconds",
    "Time to answer a request, by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "diffleet_api_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (delivered, retry, failed)",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOKS_PENDING = Gauge(
    "diffleet_api_webhook_deliveries_pending",
    "Webhook deliveries not yet delivered nor given up (measured after each sending round)",
    registry=REGISTRY,
)
WEBHOOK_OLDEST_PENDING_SECONDS = Gauge(
    "diffleet_api_webhook_oldest_pending_seconds",
    "Age of the oldest webhook delivery still pending (0 when none is)",
    registry=REGISTRY,
)
JOBS_ABANDONED = Counter(
    "diffleet_api_jobs_abandoned_total",
    "Jobs the API created but never reserved credits for, deleted by the watcher",
    registry=REGISTRY,
)
JOBS_FINALIZED = Counter(
    "diffleet_api_jobs_finalized_total",
    "Jobs whose terminal phase the watcher recorded, by phase",
    ["phase"],
    registry=REGISTRY,
)
TRAININGS_FINALIZED = Counter(
    "diffleet_api_trainings_finalized_total",
    "Trainings whose credits the training watcher settled or refunded, by phase",
    ["phase"],
    registry=REGISTRY,
)
TRAININGS_ABANDONED = Counter(
    "diffleet_api_trainings_abandoned_total",
    "Trainings the API created but never reserved credits for, cancelled by the watcher",
    registry=REGISTRY,
)
RECORDS_QUARANTINED = Counter(
    "diffleet_api_records_quarantined_total",
    "Records a background loop set aside because handling them failed by their own fault,"
    " by loop (job_watcher, training_watcher, webhook_sender, abandon_sweep)",
    ["loop"],
    registry=REGISTRY,
)


def route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class RequestMetrics:
    """Pure ASGI middleware (no buffering, so streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = scope.get("state", {}).get("rate_limit_headers") or {}
                if extra:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            REQUEST_SECONDS.labels(route_of(scope), scope["method"], str(status)).observe(
                time.perf_counter() - started
            )
