"""The chart installed for real on the local stack, as `make up` installs it: one release
of its own (name, namespace, GPUPool and queues), its operator watching only its
namespace, its pods (two operators, one API) run by the pod runner; its workers are
simulated (hosted by the runner), so jobs take seconds. No other test's platform is
touched: the session stops `make up`'s release while tests run
(tests/support/session.py). The tests share the one install and run in order:

- The stack's Prometheus finds the release's pods by their prometheus.io annotations
  (hack/prometheus_sd) and scrapes them (first: the API's count of finalized jobs is
  this test's one job).
- Jobs through the release, by kubectl and through the API.
- The chaos contract, for pods: SIGKILL the process of one pod (the operator leader's, or
  the API's; its pid from .diffleet/run/pods/<namespace>_<pod>.pid) and the pod runner
  restarts that one alone, in place, as a kubelet does for restartPolicy Always (no
  `make up` needed); the release serves again; and `make up`'s platform step on it (helm
  upgrade --install with the same values) restarts nothing.
- An upgrade with the same values rolls nothing; one that changes them rolls the
  operator and the API under a stream of jobs, losing none.
- The uninstall (last: it drains, and removes the release)."""

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from diffleet_core.settings import DEVELOPMENT_JWT_SECRET, DEVELOPMENT_WEBHOOK_SECRET
from tests.conftest import delete_namespace
from tests.stack.test_prometheus import prometheus, values
from tests.support.faults import alive
from tests.support.platform import apply_job, job_status, register_model, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import ROOT, Kubectl, stack_config

pytestmark = pytest.mark.stack
CHART = ROOT / "charts" / "diffleet"
LOCAL_VALUES = ROOT / "hack" / "values-local.yaml"
STEP_SECONDS = 0.1
HELM_TIMEOUT = "4m"
UNINSTALL_TIMEOUT = "60s"
PID_FILES = ROOT / ".diffleet" / "run" / "pods"
COMPONENTS = ("operator", "api")


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    fullname: str
    pool: str
    api_url: str
    api_key: str


def helm(kubectl: Kubectl, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        ["helm", "--kubeconfig", kubectl.kubeconfig, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"helm {' '.join(args[:2])}: {result.stderr.strip()}"
    return result.stdout


def admin(*args: str) -> str:
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "diffleet-admin"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"diffleet-admin {args[0]}: {result.stderr.strip()}"
    return result.stdout.strip()


def release_values(namespace: str, pool: str) -> dict[str, Any]:
    """On top of hack/values-local.yaml: the stack's endpoints, this release's queues (its
    namespace as their prefix), its namespace only, and a pool no other worker serves."""
    config = stack_config()
    own_queues = {"name": "DIFFLEET_QUEUE_PREFIX", "value": namespace}
    worker_env = {
        "DIFFLEET_WORKER_SIMULATE": "true",
        "DIFFLEET_WORKER_SIM_STEP_SECONDS": str(STEP_SECONDS),
        "DIFFLEET_WORKER_SIM_LOAD_SECONDS": "0.1",
        "DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
        "DIFFLEET_QUEUE_PREFIX": namespace,
    }
    return {
        "endpoints": {
            "rabbitmqManagementUrl": f"http://127.0.0.1:{config['RABBITMQ_MANAGEMENT_PORT']}",
            "s3": {"endpointUrl": f"http://127.0.0.1:{config['S3_PORT']}"},
        },
        "operator": {
            "watchNamespaces": [namespace],
            "extraEnv": [
                {"name": "DIFFLEET_OPERATOR_LEADER_LEASE_SECONDS", "value": "4"},
                {"name": "DIFFLEET_OPERATOR_LEADER_RENEW_SECONDS", "value": "0.5"},
                own_queues,
            ],
        },
        "api": {"extraEnv": [own_queues]},
        "gpuPools": [
            {
                "name": pool,
                "gpuType": pool,
                "vramGiB": 16,
                "minReplicas": 1,
                "maxReplicas": 2,
                "drainSeconds": 5,
                "nodeSelector": {"diffleet.io/pool": "a100"},
                "template": {
                    "command": ["diffleet-worker", "--simulate"],
                    "env": [{"name": k, "value": v} for k, v in worker_env.items()],
                },
            }
        ],
        "drain": {"timeoutSeconds": 120},
    }


def create_secret(kubectl: Kubectl, namespace: str, exports: dict[str, str]) -> None:
    """The Secret hack/values-local.yaml names, as hack/stack.sh creates it."""
    values = {
        "amqpUrl": exports["DIFFLEET_AMQP_URL"],
        "databaseUrl": exports["DIFFLEET_DATABASE_URL"],
        "jwtSecret": DEVELOPMENT_JWT_SECRET,
        "webhookSecret": DEVELOPMENT_WEBHOOK_SECRET,
        "accessKeyId": exports["AWS_ACCESS_KEY_ID"],
        "secretAccessKey": exports["AWS_SECRET_ACCESS_KEY"],
    }
    literals = [f"--from-literal={key}={value}" for key, value in values.items()]
    kubectl.run("create", "secret", "generic", "diffleet-local", "-n", namespace, *literals)


def install(kubectl: Kubectl, name: str, values: dict[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(values))
    helm(
        kubectl, "install", name, str(CHART), "-n", name, "-f", str(LOCAL_VALUES), "-f", str(path),
        "--wait", "--timeout", HELM_TIMEOUT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def release(
    kubectl: Kubectl, local_stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    name = f"rel-{uuid.uuid4().hex[:6]}"
    pool = f"{name}-pool"
    kubectl.run("create", "namespace", name)
    create_secret(kubectl, name, local_stack)
    started = time.monotonic()
    values_file = tmp_path_factory.mktemp("release") / "values.yaml"
    install(kubectl, name, release_values(name, pool), values_file)
    print(f"helm install --wait: {time.monotonic() - started:.1f}s")
    fullname = f"{name}-diffleet"
    service = kubectl.json("get", "service", f"{fullname}-api", "-n", name)
    api_url = f"http://127.0.0.1:{service['spec']['ports'][0]['nodePort']}"
    admin("tenants", "create", name, "--namespace", name, "--tier", "pro", "--credits", "1000")
    api_key = admin("keys", "create", name, "--name", "release-test")
    register_model(kubectl, name, "m")
    yield Release(name, name, fullname, pool, api_url, api_key)
    # Whatever the uninstall test left (or all of it, when it did not run).
    subprocess.run(
        ["helm", "--kubeconfig", kubectl.kubeconfig, "uninstall", name, "-n", name,
         "--no-hooks", "--wait", "--timeout", "1m"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    kubectl.run(
        "patch",
        "gpupool",
        pool,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
        check=False,
    )
    delete_namespace(kubectl, name)


def post_job(release: Release, name: str, **spec: Any) -> None:
    body = {"model": "m", "prompt": "a red circle", "steps": 4, "gpuClass": release.pool} | spec
    headers = {"Authorization": f"Bearer {release.api_key}"}
    response = httpx.post(
        f"{release.api_url}/v1/jobs", params={"name": name}, json=body, headers=headers,
        timeout=30,
    )  # fmt: skip
    assert response.status_code in (200, 201, 202), response.text


def api_phase(release: Release, name: str) -> str | None:
    headers = {"Authorization": f"Bearer {release.api_key}"}
    response = httpx.get(f"{release.api_url}/v1/jobs/{name}", headers=headers, timeout=30)
    phase: str | None = (response.json().get("status") or {}).get("phase")
    return phase


def succeeded_once(kubectl: Kubectl, namespace: str, name: str) -> bool:
    status = job_status(kubectl, namespace, name)
    assert status.get("phase") not in ("Failed", "Cancelled"), f"{name}: {status}"
    return status.get("phase") == "Succeeded" and status.get("attempts") == 1


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


def test_jobs_succeed_through_the_release(kubectl: Kubectl, release: Release) -> None:
    apply_job(kubectl, release.namespace, "by-kubectl", model="m", gpuClass=release.pool)
    post_job(release, "by-api")
    wait_for_phase(kubectl, release.namespace, "by-kubectl", "Succeeded", timeout=60)
    eventually(lambda: api_phase(release, "by-api") == "Succeeded", timeout=60, what="by-api")
    status = job_status(kubectl, release.namespace, "by-kubectl")
    assert status["pool"] == release.pool
    assert len(status["outputs"]) == 1


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


def pod_names(kubectl: Kubectl, release: Release, component: str) -> set[str]:
    pods = kubectl.json(
        "get", "pods", "-n", release.namespace,
        "-l", f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component={component}",
    )  # fmt: skip
    return {pod["metadata"]["name"] for pod in pods["items"]}


def generations(kubectl: Kubectl, release: Release) -> dict[str, int]:
    deployments = kubectl.json("get", "deployments", "-n", release.namespace)["items"]
    return {d["metadata"]["name"]: d["metadata"]["generation"] for d in deployments}


def test_upgrade_with_the_same_values_rolls_nothing(kubectl: Kubectl, release: Release) -> None:
    """What `make up` does on a running platform."""
    before = generations(kubectl, release)
    started = time.monotonic()
    helm(
        kubectl, "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
        "--wait", "--timeout", HELM_TIMEOUT,
    )  # fmt: skip
    print(f"helm upgrade --wait, nothing changed: {time.monotonic() - started:.1f}s")
    assert generations(kubectl, release) == before


def test_upgrade_rolls_operator_and_api_under_a_job_stream_losing_nothing(
    kubectl: Kubectl, release: Release
) -> None:
    before = {c: pod_names(kubectl, release, c) for c in ("operator", "api")}
    submitted: list[str] = []
    errors: list[str] = []
    upgrading = threading.Event()

    def submit() -> None:
        """Jobs through both doors, alternately, until the upgrade is over."""
        while not upgrading.is_set() or len(submitted) < 4:
            name = f"stream-{len(submitted)}"
            try:
                if len(submitted) % 2:
                    post_job(release, name)
                else:
                    apply_job(kubectl, release.namespace, name, model="m", gpuClass=release.pool)
            except (AssertionError, httpx.HTTPError) as error:
                errors.append(f"{name}: {error}")
            submitted.append(name)
            time.sleep(0.3)

    stream = threading.Thread(target=submit, daemon=True)
    stream.start()
    started = time.monotonic()
    helm(
        kubectl, "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
        "--set", "logging.level=WARNING", "--wait", "--timeout", HELM_TIMEOUT,
    )  # fmt: skip
    print(f"helm upgrade --wait: {time.monotonic() - started:.1f}s, {len(submitted)} jobs")
    upgrading.set()
    stream.join(timeout=60)

    assert not errors, errors
    for component in ("operator", "api"):
        eventually(
            lambda c=component: not before[c] & pod_names(kubectl, release, c),  # type: ignore[misc]
            timeout=60, what=f"the {component}'s old pods gone",
        )  # fmt: skip
    for name in submitted:
        eventually(
            lambda n=name: succeeded_once(kubectl, release.namespace, n),  # type: ignore[misc]
            timeout=90, what=f"{name} Succeeded in one attempt",
        )  # fmt: skip


NAMESPACED_KINDS = (
    "deployments", "replicasets", "pods", "services", "configmaps", "secrets",
    "serviceaccounts", "roles", "rolebindings", "jobs", "poddisruptionbudgets",
    "networkpolicies", "horizontalpodautoscalers",
)  # fmt: skip
CLUSTER_KINDS = ("clusterroles", "clusterrolebindings", "gpupools")


def release_objects(kubectl: Kubectl, release: Release) -> list[str]:
    """What carries the release's instance label, namespaced or cluster-wide."""
    selector = f"app.kubernetes.io/instance={release.name}"
    namespaced = ",".join(NAMESPACED_KINDS)
    found = kubectl.run("get", namespaced, "-n", release.namespace, "-l", selector, "-o", "name")
    cluster = kubectl.run("get", ",".join(CLUSTER_KINDS), "-l", selector, "-o", "name")
    return (found.stdout + cluster.stdout).split()


@dataclass(frozen=True)
class Uninstall:
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def uninstalled(kubectl: Kubectl, release: Release) -> Uninstall:
    """`helm uninstall --wait` while a job runs (about 15 s of it left)."""
    apply_job(kubectl, release.namespace, "last", model="m", gpuClass=release.pool, steps=150)
    wait_for_phase(kubectl, release.namespace, "last", "Running", timeout=60)
    started = time.monotonic()
    result = subprocess.run(
        ["helm", "--kubeconfig", kubectl.kubeconfig, "uninstall", release.name,
         "-n", release.namespace, "--wait", "--timeout", UNINSTALL_TIMEOUT],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    print(f"helm uninstall --wait: {time.monotonic() - started:.1f}s")
    return Uninstall(result.returncode, result.stderr.strip())


def test_uninstall_drains_running_jobs_first(
    kubectl: Kubectl, release: Release, uninstalled: Uninstall
) -> None:
    """The pre-delete hook ran before anything was deleted: the job that was running
    finished, recorded by the operator before it went."""
    status = job_status(kubectl, release.namespace, "last")
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 1


def test_uninstall_leaves_only_the_crds_and_their_objects(
    kubectl: Kubectl, release: Release, uninstalled: Uninstall
) -> None:
    assert uninstalled.returncode == 0, uninstalled.stderr
    # `--wait` waits for the release's objects; their pods go after them (the garbage
    # collector, each pod's preStop and grace period).
    eventually(
        lambda: release_objects(kubectl, release) == [],
        timeout=60,
        what="nothing of the release left",
    )
    crds = kubectl.run("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/generationjobs.diffleet.io" in crds
    jobs = kubectl.json("get", "generationjobs", "-n", release.namespace)["items"]
    assert "last" in {job["metadata"]["name"] for job in jobs}
