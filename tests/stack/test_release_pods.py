"""The release's pods as the local stack runs them (test_release.py's fixture: a release
of this module's own, its namespace, queues and GPUPool, simulated workers hosted in the
pod runner; its processes: two operator pods and one API pod), so no other test's
platform is touched: the session stops `make up`'s release while tests run
(tests/support/session.py).

- The stack's Prometheus finds them by their prometheus.io annotations (hack/prometheus_sd)
  and scrapes them.
- The chaos contract, for pods: SIGKILL the process of one pod (the operator leader's, or
  the API's; its pid from .diffleet/run/pods/<namespace>_<pod>.pid) and the pod runner
  restarts that one alone, in place, as a kubelet does for restartPolicy Always (no
  `make up` needed); the release serves again; and `make up`'s platform step on it (helm
  upgrade --install with the same values) restarts nothing."""

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack.test_prometheus import prometheus, values
from tests.stack.test_release import CHART, HELM_TIMEOUT, Release, api_phase, helm, post_job
from tests.stack.test_release import release as installed  # noqa: F401 - a fixture
from tests.support.faults import alive
from tests.support.polling import eventually
from tests.support.stack import ROOT, Kubectl

pytestmark = pytest.mark.stack

PID_FILES = ROOT / ".diffleet" / "run" / "pods"
COMPONENTS = ("operator", "api")


@pytest.fixture(scope="module")
def release(kubectl: Kubectl, installed: Release) -> Iterator[Release]:  # noqa: F811 - above
    """test_release.py's release; its GPUPool deleted first when done, while the
    release's operator still runs to drain it and lift its finalizer (the release's own
    teardown uninstalls without hooks, and would wait a minute for that finalizer)."""
    yield installed
    kubectl.run("delete", "gpupool", installed.pool, "--timeout=30s", check=False, timeout=40)


def platform_pods(kubectl: Kubectl, release: Release) -> dict[str, dict[str, Any]]:
    """The release's operator and API pods, by name."""
    selector = (
        f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component in (operator,api)"
    )
    pods = kubectl.json("get", "pods", "-n", release.namespace, "-l", selector)["items"]
    return {pod["metadata"]["name"]: pod for pod in pods}


def pid_of(release: Release, pod: str) -> int | None:
    """The pod's process, from its pid file; None while it is not running."""
    path = PID_FILES / f"{release.namespace}_{pod}.pid"
    try:
        pid = int(path.read_text())
    except FileNotFoundError:
        return None
    return pid if alive(pid) else None


def container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = pod["status"].get("containerStatuses") or [{}]
    [status] = statuses
    return status


def running(kubectl: Kubectl, release: Release) -> dict[str, tuple[int, int]] | None:
    """Each pod's (pid, restartCount) once every pod is Ready with a live process."""
    found = {}
    for name, pod in platform_pods(kubectl, release).items():
        status = container(pod)
        pid = pid_of(release, name)
        if pid is None or not status.get("ready"):
            return None
        found[name] = (pid, status["restartCount"])
    return found


def leader(kubectl: Kubectl, release: Release) -> str | None:
    """The operator pod holding the release's Lease (its identity is its pod name)."""
    holder = kubectl.run(
        "get", "lease", f"{release.fullname}-operator", "-n", release.namespace,
        "-o", "jsonpath={.spec.holderIdentity}", check=False,
    ).stdout  # fmt: skip
    return holder or None


def api_pod(pods: dict[str, tuple[int, int]]) -> str:
    [name] = [name for name in pods if "-api-" in name]
    return name


def restarted(
    kubectl: Kubectl, release: Release, victim: str, killed: int
) -> dict[str, tuple[int, int]] | None:
    """Every pod running, the victim with a process other than the killed one."""
    now = running(kubectl, release)
    return now if now is not None and now[victim][0] != killed else None


def pod_targets(release: Release) -> dict[str, str]:
    """The health of Prometheus' targets in the release's namespace, by pod."""
    targets = prometheus("/api/v1/targets")["activeTargets"]
    return {
        target["labels"]["pod"]: target["health"]
        for target in targets
        if target["labels"].get("namespace") == release.namespace
    }


def test_prometheus_scrapes_the_release_pods(kubectl: Kubectl, release: Release) -> None:
    """Found by their annotations, scraped at their pod IPs: the operator leader's count of
    the pool's workers, and the API's count of the job it recorded as Succeeded."""
    pods = set(platform_pods(kubectl, release))
    assert len(pods) == 3  # two operators, one API
    eventually(
        lambda: all(pod_targets(release).get(pod) == "up" for pod in pods),
        timeout=60,
        interval=1,
        what=f"{sorted(pods)} scraped",
    )
    assert set(pod_targets(release)) == pods  # the hosted workers serve no /metrics
    workers = f'max(diffleet_workers{{namespace="{release.namespace}",pool="{release.pool}"}})'
    eventually(lambda: values(workers) == ["1"], timeout=30, interval=1, what=workers)
    post_job(release, "scraped")
    eventually(lambda: api_phase(release, "scraped") == "Succeeded", timeout=60, what="scraped")
    recorded = (
        f'diffleet_api_jobs_finalized_total{{namespace="{release.namespace}",'
        'component="api",phase="Succeeded"}'
    )
    eventually(lambda: values(recorded) == ["1"], timeout=30, interval=1, what=recorded)


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_killed_pod_process_is_restarted_alone_and_the_release_serves_again(
    kubectl: Kubectl, release: Release, component: str
) -> None:
    before = eventually(lambda: running(kubectl, release), timeout=60, what="pods running")
    components = sorted(
        pod["metadata"]["labels"]["app.kubernetes.io/component"]
        for pod in platform_pods(kubectl, release).values()
    )
    assert components == ["api", "operator", "operator"]
    if component == "operator":
        victim = eventually(lambda: leader(kubectl, release), timeout=30, what="a leader")
    else:
        victim = api_pod(before)
    pid, restarts = before[victim]
    started = time.monotonic()
    os.killpg(pid, signal.SIGKILL)  # its own process group, as a container's
    eventually(lambda: not alive(pid), timeout=10, what=f"{victim} (pid {pid}) gone")

    after = eventually(
        lambda: restarted(kubectl, release, victim, pid),
        timeout=60,
        what=f"{victim} running again",
    )
    print(f"{victim} killed, running again in {time.monotonic() - started:.1f}s")
    # Restarted in place (the same pod, a new process), as Kubernetes reports it.
    assert after[victim][1] == restarts + 1
    # Only that one: every other pod keeps its process.
    assert {n: v for n, v in after.items() if n != victim} == {
        n: v for n, v in before.items() if n != victim
    }

    name = f"after-{component}"
    post_job(release, name)
    eventually(lambda: api_phase(release, name) == "Succeeded", timeout=60, what=name)

    # `make up` on the running platform: helm upgrade --install with the same values.
    helm(
        kubectl, "upgrade", "--install", release.name, str(CHART), "-n", release.namespace,
        "--reuse-values", "--wait", "--timeout", HELM_TIMEOUT,
    )  # fmt: skip
    assert running(kubectl, release) == after
