"""The local stack across one pytest run, which may be several processes (pytest-xdist
workers): the first process that needs the stack brings it up, under a file lock, and
notes what it found; the process that began the run (xdist's controller, or the only
process) puts the stack back as found once the run ends, when no worker runs any more."""

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.stack import PLATFORM_PROCESSES, stack, stack_status

# Set by the process that begins the run; xdist's workers inherit it.
RUN_DIR_VARIABLE = "DIFFLEET_TEST_RUN_DIR"


class StackStartError(RuntimeError):
    """`hack/stack.sh up-infra` failed; the message holds the end of its output."""


@dataclass(frozen=True)
class StackFound:
    """What the run found, so that its end puts the stack back that way."""

    stopped: bool  # nothing ran: the run started the stack and stops it at the end
    platform_was_up: bool  # `make up`'s platform ran: stopped for the run, started after


def begin_run() -> None:
    os.environ[RUN_DIR_VARIABLE] = tempfile.mkdtemp(prefix="diffleet-pytest-")


def _run_dir() -> Path:
    return Path(os.environ[RUN_DIR_VARIABLE])


@contextmanager
def run_lock(name: str) -> Iterator[None]:
    """Held by one process of the run at a time."""
    with (_run_dir() / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_stack() -> None:
    """Brings the infrastructure up, with the platform of `make up` stopped (tests run
    their own operators and workers), once per run: later callers find it noted."""
    noted = _run_dir() / "stack.json"
    with run_lock("stack"):
        if noted.exists():
            return
        running = stack_status()
        found = StackFound(
            stopped=not any(running.values()),
            platform_was_up=any(running.get(name, False) for name in PLATFORM_PROCESSES),
        )
        if found.platform_was_up:
            stack("down-platform", timeout=60)
        if not all(up for name, up in running.items() if name not in PLATFORM_PROCESSES):
            result = stack("up-infra")
            if result.returncode != 0:
                raise StackStartError(result.stderr[-4000:])
        noted.write_text(json.dumps(asdict(found)))


def end_run() -> None:
    """Stops a stack the run started, or starts again the platform it stopped."""
    noted = _run_dir() / "stack.json"
    if noted.exists():
        found = StackFound(**json.loads(noted.read_text()))
        if found.stopped:
            stack("down", timeout=120)
        elif found.platform_was_up:
            stack("up", timeout=300)
    shutil.rmtree(_run_dir(), ignore_errors=True)
