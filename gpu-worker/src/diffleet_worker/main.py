"""Entry point of `diffleet-worker`."""

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, NoReturn

import boto3
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from botocore.config import Config
from kubernetes_asyncio import client, config
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from prometheus_client import start_http_server

from diffleet_core import telemetry
from diffleet_core.broker import Broker
from diffleet_core.logs import configure_logging
from diffleet_core.patience import patiently
from diffleet_core.settings import Credential, InsecureCredentialError, Settings, get_settings
from diffleet_worker import metrics
from diffleet_worker.announcer import Announcer
from diffleet_worker.config import WorkerSettings, get_worker_settings
from diffleet_worker.runner import TrainingRunner
from diffleet_worker.service import WorkerService
from diffleet_worker.simulated import SimulatedRunner

logger = logging.getLogger("diffleet_worker")


async def connect_kubernetes() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


async def connect_broker(settings: WorkerSettings, core: Settings) -> Broker:
    """RabbitMQ, waited for for up to `broker_patience_seconds`: a worker (re)started
    during an outage comes up once RabbitMQ is back."""
    return await patiently(
        lambda: Broker.connect(core.amqp_url, core.topology, settings.request_timeout_seconds),
        what="RabbitMQ",
        retry_on=(*CONNECTION_EXCEPTIONS, TimeoutError),
        patience=settings.broker_patience_seconds,
    )


def make_runner(settings: WorkerSettings, s3: Any, simulate: bool) -> TrainingRunner:
    if simulate:
        return SimulatedRunner(settings, s3)
    # torch and diffusers take tens of seconds to import: only real workers pay for them.
    from diffleet_worker.diffusers_runner import DiffusersRunner

    return DiffusersRunner.build(settings, s3)


async def serve(
    settings: WorkerSettings,
    core: Settings,
    api: client.ApiClient,
    s3: Any,
    stop: asyncio.Event,
    simulate: bool,
) -> None:
    """One worker: its Lease, its queue, its runner; drains when `stop` is set. `core` holds
    the backing services' addresses and the queue prefix."""
    runner = make_runner(settings, s3, simulate)
    broker = await connect_broker(settings, core)
    announcer = Announcer(
        api,
        settings.fleet_namespace,
        settings.worker_id,
        settings.lease_seconds,
        settings.request_timeout_seconds,
    )
    service = WorkerService(settings, broker, runner, trainer=runner)
    await service.start()

    def renewed(through: bool) -> None:
        metrics.READY.labels(settings.worker_id).set(float(through and broker.connected))

    renewal = asyncio.create_task(
        announcer.keep(
            service.inventory,
            settings.renew_seconds,
            renewed,
            settings.announce_check_seconds,
        )
    )
    logger.info("worker %s serving pool %s", settings.worker_id, settings.pool)
    try:
        await stop.wait()
        logger.info("stopping: draining for up to %ss", settings.shutdown_grace_seconds)
        await service.drain(settings.shutdown_grace_seconds)
    finally:
        renewal.cancel()
        await broker.close()
        await announcer.release()


def replica(settings: WorkerSettings, index: int) -> WorkerSettings:
    """The `index`th of several workers hosted in one process: its own name, and its own
    node when the process names one (a simulated fleet, one worker per kwok node)."""
    node = f"{settings.node}-{index}" if settings.node else ""
    return settings.model_copy(update={"worker_id": f"{settings.worker_id}-{index}", "node": node})


def s3_client() -> Any:
    """An S3 client for the workers of a process (from the AWS environment)."""
    return boto3.client(
        "s3", config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3})
    )


async def run(settings: WorkerSettings, replicas: int, simulate: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    api = await connect_kubernetes()
    fleet = [settings] if replicas == 1 else [replica(settings, i) for i in range(replicas)]
    # One S3 client for the process: boto3's clients are thread-safe, and a thousand
    # hosted workers would otherwise build a thousand.
    s3 = s3_client()
    try:
        core = get_settings()
        await asyncio.gather(*(serve(worker, core, api, s3, stop, simulate) for worker in fleet))
    finally:
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="diffleet-worker",
        description="Runs a diffleet worker. Settings come from DIFFLEET_* and "
        "DIFFLEET_WORKER_* environment variables.",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run jobs with scripted timings instead of diffusers (tests, benchmarks);"
        " DIFFLEET_WORKER_SIMULATE=true does the same",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="with --simulate: run this many workers in one process (benchmarks)",
    )
    args = parser.parse_args()
    configure_logging("worker")
    settings = get_worker_settings()
    simulate = args.simulate or settings.simulate
    if args.replicas > 1 and not simulate:
        parser.error("--replicas needs --simulate: a real worker owns its device")
    if settings.concurrency > 1 and not simulate:
        # One device, one pipeline whose LoRAs and scheduler are set per job: runs take
        # turns under the device lock, so more than one would be advertised, not run.
        parser.error(
            "DIFFLEET_WORKER_CONCURRENCY above 1 needs --simulate: a diffusers "
            "worker runs one job at a time on its device"
        )
    try:
        get_settings().check_credentials(Credential.AMQP, Credential.S3)
    except InsecureCredentialError as error:
        sys.exit(f"diffleet-worker: {error}")
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    if telemetry.setup_tracing("diffleet-worker"):
        # Its S3 calls, as spans of the job stage they serve.
        BotocoreInstrumentor().instrument()  # type: ignore[no-untyped-call]
    asyncio.run(run(settings, max(args.replicas, 1), simulate))
    exit_without_teardown()


def exit_without_teardown() -> NoReturn:
    """Ends the process once it has stopped, its spans and logs written out. Python's own
    teardown of torch's and diffusers' modules takes seconds (5 s on a busy 2-core
    machine), which a pod spends Terminating and a rolling update waits for."""
    telemetry.shutdown_tracing()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
