"""The local stack as the tests see it: its settings, its environment and kubectl."""

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kube_api import RESOURCES, KubeApi, Resource, kube_api

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "hack" / "stack.sh"


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a shell env file such as hack/stack.env."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        parsed = shlex.split(value)
        values[key] = parsed[0] if parsed else ""
    return values


def stack_config() -> dict[str, str]:
    """Ports, credentials and pools of the local stack (hack/stack.env)."""
    return read_env_file(ROOT / "hack" / "stack.env")


def stack(command: str, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Runs `hack/stack.sh COMMAND`, output captured."""
    return subprocess.run(
        [str(STACK), command], capture_output=True, text=True, timeout=timeout, check=False
    )


# The components of the release `make up` installs after the infrastructure (hack/stack.sh
# PLATFORM): the operator's and the API's pods, and the demo's worker pod.
PLATFORM_PROCESSES = frozenset({"operator", "gpu-worker", "api"})


def stack_status() -> dict[str, bool]:
    """Which processes of the local stack and components of the release run (`make
    status`), by name; the release's pods, listed indented after them, are not read."""
    lines = stack("status", timeout=30).stdout.splitlines()
    return {
        line.split()[0]: line.split()[1] == "running"
        for line in lines
        if line.strip() and not line.startswith(" ")
    }


def stack_exports() -> dict[str, str]:
    """The variables `make env` exports, as a dict."""
    result = stack("env", timeout=30)
    result.check_returncode()
    exports: dict[str, str] = {}
    for line in result.stdout.splitlines():
        for assignment in shlex.split(line.removeprefix("export ")):
            key, _, value = assignment.partition("=")
            exports[key] = os.path.expandvars(value)
    return exports


def plain_get(args: tuple[str, ...]) -> tuple[Resource, str | None, str | None] | None:
    """(resource, name, namespace) of `get KIND [NAME] [-n NAMESPACE]`; None for any
    other command (more names, selectors, other flags)."""
    match args:
        case ("get", kind, "-n", namespace) if kind in RESOURCES:
            return RESOURCES[kind], None, namespace
        case ("get", kind, name, "-n", namespace) | ("get", kind, "-n", namespace, name) if (
            kind in RESOURCES and not name.startswith("-")
        ):
            return RESOURCES[kind], name, namespace
        case ("get", kind, name) if kind in RESOURCES and not name.startswith("-"):
            return RESOURCES[kind], name, "default"
    return None


@dataclass(frozen=True)
class Kubectl:
    """kubectl against the local stack, with a timeout on every call."""

    kubeconfig: str

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", self.kubeconfig, "--request-timeout=20s", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    @property
    def api(self) -> KubeApi:
        """The API server over HTTP, for the calls made most often."""
        return kube_api(self.kubeconfig)

    def json(self, *args: str) -> Any:
        """`kubectl ARGS -o json`, parsed. A plain get of one kind (an object, or all of
        them in a namespace) is answered over HTTP, the same JSON in a fraction of the time."""
        read = plain_get(args)
        if read is not None:
            return self.api.get(*read)
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        extra = ["-n", namespace] if namespace else []
        self.run("apply", *extra, "-f", "-", stdin=manifest)
