"""Entry point of `diffleet-operator`: wins leader election, then runs kopf's handlers
and the operator's loops (dispatch, results, housekeeping) while it leads; a leader that
loses its Lease stops them and stands by again, in the same process, until stopped."""

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import kopf
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from prometheus_client import start_http_server

from diffleet_core import telemetry
from diffleet_core.broker import Broker
from diffleet_core.fleet import WORKER_LABEL
from diffleet_core.logs import configure_logging
from diffleet_core.resources import generation_job
from diffleet_core.settings import Credential, InsecureCredentialError, get_settings
from diffleet_operator import handlers
from diffleet_operator.autoscaler.pod_watch import PodWatch
from diffleet_operator.cache.fleet import FleetInventory
from diffleet_operator.cache.jobs import JobCache
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.config import OperatorSettings, get_operator_settings
from diffleet_operator.dispatch_pause import DispatchPauseWatch
from diffleet_operator.housekeeping import Housekeeping
from diffleet_operator.kube import Kube
from diffleet_operator.leader import LeaderElection
from diffleet_operator.persistence import PREFIX, DiffBaseStorage
from diffleet_operator.quarantine import describe, transient
from diffleet_operator.queue.admitter import Admitter
from diffleet_operator.readiness import Readiness
from diffleet_operator.results import Results
from diffleet_operator.runtime import Runtime
from diffleet_operator.scheduler.dispatcher import Dispatcher
from diffleet_operator.training.results import TrainingResults
from diffleet_operator.training.scheduler import TrainingScheduler

logger = logging.getLogger("diffleet_operator")

# A leader that cannot reach RabbitMQ releases its Lease and tries again after this
# pause, doubling up to the maximum.
BROKER_RETRY_FIRST_SECONDS = 1.0
BROKER_RETRY_MAX_SECONDS = 30.0
# Once the term ends (leadership lost, or shutdown), kopf has this long to stop its
# handlers and loops; past it they are cancelled, so that a stop stuck on an overloaded
# API server never keeps this process from standing by (and leading again).
STOP_GRACE_SECONDS = 10.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    """kopf's settings: diffleet's own annotation and finalizer names (and no diff base on
    GenerationJobs, diffleet_operator.persistence), bounded timeouts."""
    settings.persistence.finalizer = generation_job.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = DiffBaseStorage()
    settings.posting.level = logging.INFO
    settings.networking.request_timeout = 30
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Only workers' Leases, selected by the API server: kopf filters handlers' labels on
    # its side, so a cluster-wide watch would stream every node's heartbeat too
    # (kube-node-lease: a renewal every 10 to 30 s per node, 1,000 nodes at fleet scale).
    settings.watching.label_selectors["coordination.k8s.io", "leases"] = f"{WORKER_LABEL}=true"


@kopf.on.startup()
async def take_signals(memo: kopf.Memo, **_: object) -> None:
    """SIGTERM and SIGINT set the term's stop flag. kopf's own handlers of them (put in
    place as it starts) would stop it too, but leave its waiter on that flag running,
    and kopf waits 5 s for every task still running when it stops."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, memo["stop"].set)


@kopf.on.startup()
async def start_loops(memo: kopf.Memo, **_: object) -> None:
    """Starts the dispatch, result, housekeeping and autoscaler loops and the worker pod
    watch inside kopf's context (so they can post Kubernetes Events); kopf's cleanup
    stops them."""
    rt = Runtime.of(memo)
    admitter = Admitter.of(memo)
    dispatcher = Dispatcher(rt, admitter)
    await dispatcher.start()
    await Results(rt, dispatcher).start()
    # Trainings, below every inference tier (diffleet_operator.training).
    trainings = TrainingScheduler(rt, dispatcher)
    await trainings.start()
    await TrainingResults(rt, trainings).start()
    housekeeping = Housekeeping(rt, dispatcher, admitter)
    pod_watch = PodWatch(
        rt.kube, rt.operator.fleet_namespace, rt.worker_pods, rt.fleet, rt.autoscaler.trigger
    )
    pause_watch = DispatchPauseWatch(
        rt.kube,
        rt.operator.fleet_namespace,
        rt.operator.dispatch_configmap,
        rt.dispatch_pause,
        dispatcher.buffers.wake.set,
    )
    memo["loops"] = [
        asyncio.create_task(dispatcher.run(), name="dispatch"),
        asyncio.create_task(trainings.run(), name="trainings"),
        asyncio.create_task(housekeeping.run(), name="housekeeping"),
        asyncio.create_task(pod_watch.run(), name="worker-pods"),
        asyncio.create_task(pause_watch.run(), name="dispatch-pause"),
        asyncio.create_task(rt.autoscaler.run(dispatcher, rt.pool_controller), name="autoscaler"),
    ]


@kopf.on.cleanup()
async def stop_loops(memo: kopf.Memo, **_: object) -> None:
    """Stops the loops, writes the coalescing status writes (acknowledging the messages
    they cover) and closes the consuming channels: kopf waits 5 s for any task still
    running when it stops (those channels' readers among them) before it cancels them."""
    await _cancel_loops(memo)
    rt = Runtime.of(memo)
    await rt.statuses.close(within=rt.operator.request_timeout_seconds)
    await rt.broker.close_consumers()


async def _cancel_loops(memo: kopf.Memo) -> None:
    loops: list[asyncio.Task[None]] = memo.get("loops", [])
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


async def run(op: OperatorSettings) -> None:
    """Stands by, leads while this process holds the Lease, and stands by again when it
    loses it, until SIGTERM or SIGINT."""
    kube = await Kube.connect(op.request_timeout_seconds, op.event_tally_seconds)
    election = LeaderElection(
        kube,
        op.fleet_namespace,
        op.leader_lease,
        op.identity,
        op.leader_lease_seconds,
        op.leader_renew_seconds,
    )
    readiness = Readiness(election)
    if op.readiness_port:
        await readiness.serve(op.readiness_port, op.listen_host)
    shutdown = asyncio.Event()
    delay = BROKER_RETRY_FIRST_SECONDS
    try:
        while True:
            # kopf puts its own handlers in place while it runs; a standby needs ours.
            for signum in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(signum, shutdown.set)
            if not await election.acquire(shutdown):
                return
            if not await lead(op, kube, election, readiness):
                logger.warning("standing by for %.0fs before leading again", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(shutdown.wait(), timeout=delay)
                delay = min(delay * 2, BROKER_RETRY_MAX_SECONDS)
                continue
            delay = BROKER_RETRY_FIRST_SECONDS
            if not election.lost:
                return  # stopped by a signal
    finally:
        await readiness.close()
        await kube.close()


async def lead(
    op: OperatorSettings, kube: Kube, election: LeaderElection, readiness: Readiness
) -> bool:
    """Runs kopf's handlers and the operator's loops until stopped or leadership is lost;
    everything they hold (consumers, caches, held admissions) ends with them. False, the
    Lease released, when RabbitMQ cannot be reached: leading without it would stall."""
    settings = get_settings()
    stop = asyncio.Event()
    holding = asyncio.create_task(election.hold(stop), name="leader-election")
    try:
        broker = await Broker.connect(
            settings.amqp_url, settings.topology, op.request_timeout_seconds
        )
    except Exception as error:
        holding.cancel()
        await election.release()
        if not transient(error):
            raise
        logger.warning("RabbitMQ unreachable: %s", describe(error))
        return False
    rt = Runtime(settings, op, kube, broker, FleetInventory(), JobCache(), ModelIndex())
    readiness.broker = broker
    try:
        # Restricted to some job namespaces, it still watches the workers' Leases and the
        # platform's ModelCaches.
        namespaces = [*op.namespaces, op.fleet_namespace, settings.system_namespace]
        memo = kopf.Memo(runtime=rt, admitter=Admitter(rt), stop=stop)
        operator = asyncio.create_task(
            kopf.operator(
                clusterwide=not op.namespaces,
                namespaces=list(dict.fromkeys(namespaces)) if op.namespaces else [],
                standalone=True,
                stop_flag=stop,
                memo=memo,
                liveness_endpoint=op.liveness_endpoint or None,
            ),
            name="kopf",
        )
        try:
            await _until_stopped(operator, stop)
        finally:
            await _cancel_loops(memo)  # kopf's cleanup did, unless it was cancelled first
    finally:
        readiness.broker = None
        # Status writes coalescing when the term ends are written now; the messages they
        # cover are acknowledged before the connection closes.
        await rt.statuses.close(within=op.request_timeout_seconds)
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        try:
            await broker.close()
        except Exception as error:  # noqa: BLE001 - a broken connection is closed anyway
            logger.warning("RabbitMQ connection not closed cleanly: %s", error)
        if not election.lost:
            await election.release()
    return True


async def _until_stopped(operator: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Waits for kopf to end; once `stop` is set, for STOP_GRACE_SECONDS at most, then
    cancels it (and waits as long again, at most). kopf's own errors are raised here."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([operator, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not operator.done():
            await asyncio.wait([operator], timeout=STOP_GRACE_SECONDS)
    finally:
        stopping.cancel()
        if not operator.done():
            logger.warning("kopf did not stop within %ss: cancelled", STOP_GRACE_SECONDS)
            operator.cancel()
            await asyncio.wait([operator], timeout=STOP_GRACE_SECONDS)
    if operator.done() and not operator.cancelled():
        operator.result()


def main() -> None:
    argparse.ArgumentParser(
        prog="diffleet-operator",
        description="Runs the diffleet operator against the cluster of the current kubeconfig "
        "(in a pod: its ServiceAccount). Settings come from DIFFLEET_* and DIFFLEET_OPERATOR_* "
        "environment variables (docs/operator.md).",
    ).parse_args()
    configure_logging("operator")
    # Per-object handler chatter (every watch event) stays out; transitions are Events.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    op = get_operator_settings()
    try:
        get_settings().check_credentials(Credential.AMQP, Credential.S3)
    except InsecureCredentialError as error:
        sys.exit(f"diffleet-operator: {error}")
    logger.info("handlers registered: %s", ", ".join(handlers.__all__))
    if op.metrics_port:
        start_http_server(op.metrics_port, addr=op.listen_host)
    if telemetry.setup_tracing("diffleet-operator"):
        # Its Kubernetes calls, as spans of the job they serve (JobRoots drops the rest).
        AioHttpClientInstrumentor().instrument()
    asyncio.run(run(op))
