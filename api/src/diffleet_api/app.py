"""The FastAPI application: the runtime is opened in the lifespan, routers combined here."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import boto3
import psycopg
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from botocore.config import Config
from fastapi import FastAPI

from diffleet_api import db, errors
from diffleet_api.doors.a1111 import errors as a1111_errors
from diffleet_api.doors.openai import errors as openai_errors
from diffleet_api.kube import Kube
from diffleet_api.metrics import RequestMetrics
from diffleet_api.moderation import POLICY_CACHE_SECONDS
from diffleet_api.routers import (
    a1111,
    console,
    datasets,
    fleet,
    health,
    jobs,
    models,
    openai_images,
    styles,
    trainings,
    uploads,
    usage,
)
from diffleet_api.runtime import Runtime
from diffleet_api.settings import ApiSettings, get_api_settings
from diffleet_api.training_watcher import TrainingWatcher
from diffleet_api.watcher import JobWatcher
from diffleet_core import telemetry
from diffleet_core.broker import Broker
from diffleet_core.patience import patiently
from diffleet_core.remembered import Remembered
from diffleet_core.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """diffleet's REST front door onto GenerationJob resources.

A job's request body is the GenerationJob `spec`; responses carry its `status`.
Authenticate with `Authorization: Bearer <API key or JWT>`. Errors are RFC 9457
problem details (`application/problem+json`)."""


def s3_client(timeout: float) -> object:
    return boto3.client(
        "s3",
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
        ),
    )


async def open_runtime(settings: ApiSettings, platform: Settings) -> Runtime:
    """The runtime's connections. PostgreSQL and RabbitMQ are waited for (for up to
    `startup_patience_seconds`), so an API started during their outage comes up once they
    are back instead of exiting."""

    async def database() -> db.Pool:
        if settings.migrate_on_start:
            await asyncio.to_thread(db.migrate, platform.database_url)
        return await db.open_pool(
            platform.database_url,
            settings.db_pool_min,
            settings.db_pool_max,
            settings.request_timeout_seconds,
        )

    patience = settings.startup_patience_seconds
    amqp_away = (*CONNECTION_EXCEPTIONS, TimeoutError)
    pool = await patiently(
        database, what="PostgreSQL", retry_on=(psycopg.OperationalError,), patience=patience
    )
    kube = await Kube.connect(settings.request_timeout_seconds, settings.kube_connections)
    broker = await patiently(
        lambda: Broker.connect(
            platform.amqp_url, platform.topology, settings.request_timeout_seconds
        ),
        what="RabbitMQ",
        retry_on=amqp_away,
        patience=patience,
    )
    amqp = await patiently(
        lambda: aio_pika.connect_robust(
            platform.amqp_url, timeout=settings.request_timeout_seconds
        ),
        what="RabbitMQ",
        retry_on=amqp_away,
        patience=patience,
    )
    return Runtime(
        settings=settings,
        amqp=amqp,
        platform=platform,
        pool=pool,
        kube=kube,
        broker=broker,
        s3=s3_client(settings.request_timeout_seconds),
        models=Remembered(settings.model_cache_seconds),
        policies=Remembered(POLICY_CACHE_SECONDS),
    )


async def close_runtime(runtime: Runtime) -> None:
    for task in runtime.background:
        task.cancel()
    await asyncio.gather(*runtime.background, return_exceptions=True)
    await runtime.broker.close()
    await asyncio.wait_for(runtime.amqp.close(), runtime.settings.request_timeout_seconds)
    await runtime.kube.close()
    await runtime.pool.close()


def create_app(settings: ApiSettings | None = None, platform: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings or get_api_settings(), platform or get_settings())
        app.state.runtime = runtime
        if runtime.settings.watcher:
            runtime.background.add(asyncio.create_task(JobWatcher(runtime).run()))
            runtime.background.add(asyncio.create_task(TrainingWatcher(runtime).run()))
        try:
            yield
        finally:
            await close_runtime(runtime)
            # uvicorn ends the process with the SIGTERM it handled, skipping exit handlers.
            await asyncio.to_thread(telemetry.shutdown_tracing)

    app = FastAPI(title="diffleet", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    dialects = {
        openai_errors.PREFIX: openai_errors.render,
        a1111_errors.PREFIX: a1111_errors.render,
    }
    errors.install(app, dialects=dialects)
    app.add_middleware(RequestMetrics)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(uploads.router)
    app.include_router(models.router)
    app.include_router(styles.router)
    app.include_router(usage.router)
    app.include_router(trainings.router)
    app.include_router(datasets.router)
    app.include_router(openai_images.router)
    app.include_router(a1111.router)
    app.include_router(fleet.router)
    app.include_router(console.router)
    return app
