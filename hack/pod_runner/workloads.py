"""What runs a pod: a local process, or a simulated worker hosted in the runner's process."""

import asyncio
import contextlib
import logging
import os
import signal
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Protocol

from kubernetes_asyncio import client, config

from diffleet_core.settings import Settings, settings_from
from diffleet_worker.config import WorkerSettings
from diffleet_worker.main import s3_client, serve

logger = logging.getLogger("pod_runner")
WORKER_COMMAND = "diffleet-worker"
# The platform's images by repository, and the console script of .venv that is each one's
# entrypoint: the runner runs no images, a container without a command runs this.
IMAGE_ENTRYPOINTS = {
    "diffleet-operator": "diffleet-operator",
    "diffleet-api": "diffleet-api",
    "diffleet-gpu-worker": WORKER_COMMAND,
}
KILLED = 137
# The log file of the pod whose hosted worker is running the current task (tasks inherit it).
_POD_LOG: ContextVar[IO[str] | None] = ContextVar("pod_log", default=None)


class PodLogHandler(logging.Handler):
    """Copies the log records of a hosted worker's tasks into its pod's log file."""

    def emit(self, record: logging.LogRecord) -> None:
        out = _POD_LOG.get()
        if out is not None and not out.closed:
            out.write(self.format(record) + "\n")
            out.flush()


class Workload(Protocol):
    """One run of a pod's container."""

    kind: str
    pid: int

    async def wait(self) -> int:
        """Waits for the end of the run; its exit code."""
        ...

    def terminate(self) -> None:
        """Asks the run to stop (SIGTERM)."""
        ...

    def kill(self) -> None:
        """Stops the run at once (SIGKILL)."""
        ...


def image_repository(image: str) -> str:
    """ghcr.io/diffleet/diffleet-api:0.1.0 -> diffleet-api."""
    name = image.rsplit("/", 1)[-1]
    return name.split("@", 1)[0].split(":", 1)[0]


def container_argv(container: client.V1Container) -> list[str]:
    """The container's command and args; without a command, its image's entrypoint; none
    (empty) for an image the runner has no entrypoint for."""
    command = list(container.command or [])
    if not command:
        entrypoint = IMAGE_ENTRYPOINTS.get(image_repository(container.image or ""))
        if entrypoint is None:
            return []
        command = [entrypoint]
    return [*command, *(container.args or [])]


def write_pid_file(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")


class LocalProcess:
    """A process of its own, its pid in a pid file (the stack's chaos tests kill it by
    that file) while it runs."""

    kind = "process"

    def __init__(self, process: asyncio.subprocess.Process, pid_file: Path) -> None:
        self._process = process
        self._pid_file = pid_file
        self.pid = process.pid

    @classmethod
    async def start(
        cls, argv: list[str], env: dict[str, str], log: IO[bytes], pid_file: Path
    ) -> "LocalProcess":
        # Its own session: signals reach the whole process group, as in a container.
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=Path.cwd(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        write_pid_file(pid_file, process.pid)
        return cls(process, pid_file)

    async def wait(self) -> int:
        code = await self._process.wait()
        self._pid_file.unlink(missing_ok=True)
        return code if code >= 0 else 128 - code

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def hostable(argv: list[str], env: dict[str, str]) -> bool:
    """A simulated worker (the worker's command, DIFFLEET_WORKER_SIMULATE=true) may be hosted
    in the runner: hundreds of pods need not mean hundreds of interpreters."""
    simulated = env.get("DIFFLEET_WORKER_SIMULATE", "").lower() in {"true", "1", "yes"}
    return (
        simulated
        and bool(argv)
        and Path(argv[0]).name == WORKER_COMMAND
        and all(arg == "--simulate" for arg in argv[1:])
    )


class HostedWorker:
    """A simulated worker run by diffleet_worker's own `serve` as a task of this process,
    with its pod's settings (DIFFLEET_WORKER_* and the backing services', DIFFLEET_*) and a
    client of its pod's ServiceAccount.
    SIGTERM is the worker's drain (its stop event), SIGKILL cancels the task."""

    kind = "hosted"

    def __init__(self, task: "asyncio.Task[None]", stop: asyncio.Event) -> None:
        self._task = task
        self._stop = stop
        self.pid = os.getpid()

    @classmethod
    async def start(cls, env: dict[str, str], kubeconfig: Path, log: Path) -> "HostedWorker":
        settings = settings_from(WorkerSettings, env).model_copy(update={"metrics_port": 0})
        core = settings_from(Settings, env)
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
        api = client.ApiClient(configuration)
        stop = asyncio.Event()
        out = log.open("a")

        async def serving() -> None:
            _POD_LOG.set(out)  # this task's context only
            try:
                await serve(settings, core, api, s3_client(), stop, simulate=True)
            finally:
                await api.close()
                out.close()

        return cls(asyncio.create_task(serving(), name=f"worker {settings.worker_id}"), stop)

    async def wait(self) -> int:
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                return KILLED
            raise
        except Exception:
            logger.exception("hosted worker %s failed", self._task.get_name())
            return 1
        return 0

    def terminate(self) -> None:
        self._stop.set()

    def kill(self) -> None:
        self._task.cancel()
