"""Faults in the local stack: SIGKILL one component's process group, and revive the stack
(`hack/stack.sh up-infra` restarts exactly the processes that died)."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.support.polling import eventually
from tests.support.stack import ROOT, stack

RUN_DIR = ROOT / ".diffleet" / "run"


def _infra() -> tuple[str, ...]:
    """hack/stack.sh's INFRA array, in start order (read from the script: one list)."""
    script = (ROOT / "hack" / "stack.sh").read_text()
    found = re.search(r"^INFRA=\(([^)]*)\)", script, re.MULTILINE)
    assert found, "hack/stack.sh defines no INFRA=(...)"
    return tuple(found.group(1).split())


INFRA = _infra()


def pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def pid_of(name: str) -> int:
    """The pid (and process group) of a stack component, from .diffleet/run/<name>.pid."""
    return int(pid_file(name).read_text().strip())


def infra_pids() -> dict[str, int]:
    return {name: pid_of(name) for name in INFRA}


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (PID 1 may not reap the stack's orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill(name: str) -> None:
    """SIGKILLs the whole process group of a stack component and waits until it is gone."""
    pid = pid_of(name)
    os.killpg(pid, signal.SIGKILL)
    eventually(lambda: not alive(pid), timeout=10, what=f"{name} (pid {pid}) gone")


def revive(timeout: float = 300) -> float:
    """Runs `hack/stack.sh up-infra`, which restarts the components that died and waits
    until every one is healthy; returns the seconds it took."""
    started = time.monotonic()
    try:
        result = stack("up-infra", timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"up-infra did not finish within {timeout:.0f}s") from error
    if result.returncode != 0:
        raise AssertionError(f"up-infra failed:\n{result.stderr[-4000:]}")
    return time.monotonic() - started
