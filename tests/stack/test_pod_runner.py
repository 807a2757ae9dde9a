"""The local stack's pod runner (hack/pod_runner) plays the kubelet for diffleet's pods on
kwok nodes: it runs their commands as local processes and writes their status."""

import asyncio
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from diffleet_core.fleet import PART_OF, PART_OF_LABEL
from diffleet_core.queues import Topology
from diffleet_core.settings import Settings, settings_from
from tests.support.polling import eventually
from tests.support.stack import ROOT, Kubectl, stack_config, stack_exports

pytestmark = pytest.mark.stack
NODE = "kwok-t4-0"
FLEET_NAMESPACE = "diffleet-system"
FLEET_ACCOUNT = "diffleet-worker"
PODS_RUN_DIR = ROOT / ".diffleet" / "run" / "pods"


def runner_report() -> list[dict[str, Any]]:
    port = stack_config()["POD_RUNNER_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/pods", timeout=5) as response:
        pods: list[dict[str, Any]] = json.load(response)["pods"]
    return pods


def pod_manifest(
    name: str,
    command: list[str],
    *,
    env: list[dict[str, Any]] | None = None,
    labelled: bool = True,
    **spec: Any,
) -> str:
    labels = {PART_OF_LABEL: PART_OF} if labelled else {}
    container = {"name": "main", "image": "diffleet/test", "command": command, "env": env or []}
    if "readinessProbe" in spec:
        container["readinessProbe"] = spec.pop("readinessProbe")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": NODE,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "containers": [container],
            **spec,
        },
    }
    return json.dumps(pod)


def python(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kubectl.json("get", "pod", name, "-n", namespace)
    return found


def ready(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    current = pod(kubectl, namespace, name)
    conditions = {c["type"]: c["status"] for c in current["status"].get("conditions", [])}
    return current if conditions.get("Ready") == "True" else None


def gone(kubectl: Kubectl, namespace: str, name: str) -> bool:
    found = kubectl.run("get", "pod", name, "-n", namespace, "--ignore-not-found", "-o", "name")
    return not found.stdout.strip()


def test_pod_runs_ready_with_downward_env_and_stops_on_sigterm(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    out = tmp_path / "env.json"
    marker = tmp_path / "terminated"
    script = f"""
import json, os, signal, sys, time
names = ["POD_NAME", "POD_NAMESPACE", "NODE", "POD_IP", "GREETING", "KUBECONFIG"]
json.dump({{n: os.environ.get(n) for n in names}}, open({str(out)!r}, "w"))
signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, "w").close(), sys.exit(0)))
while True:
    time.sleep(0.1)
"""

    def field(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = [
        {"name": "POD_NAME", **field("metadata.name")},
        {"name": "POD_NAMESPACE", **field("metadata.namespace")},
        {"name": "NODE", **field("spec.nodeName")},
        {"name": "POD_IP", **field("status.podIP")},
        {"name": "GREETING", "value": "hello $(POD_NAME)"},
    ]
    kubectl.apply(pod_manifest("sleeper", python(script), env=env), namespace)

    running = eventually(lambda: ready(kubectl, namespace, "sleeper"), timeout=30, what="Ready")
    assert running["status"]["phase"] == "Running"
    pod_ip = running["status"]["podIP"]
    assert pod_ip.startswith("127.0."), pod_ip
    assert pod_ip != "127.0.0.1", "the host's own address"
    assert running["status"]["containerStatuses"][0]["restartCount"] == 0
    seen = eventually(lambda: out.exists() and json.loads(out.read_text()), timeout=10, what="env")
    assert seen["POD_NAME"] == "sleeper"
    assert seen["POD_NAMESPACE"] == namespace
    assert seen["NODE"] == NODE
    assert seen["POD_IP"] == pod_ip
    pid_file = PODS_RUN_DIR / f"{namespace}_sleeper.pid"
    ran = {p["pod"]: p["pid"] for p in runner_report()}
    assert int(pid_file.read_text()) == ran[f"{namespace}/sleeper"]
    assert seen["GREETING"] == "hello sleeper"
    assert Path(seen["KUBECONFIG"]).stat().st_mode & 0o777 == 0o600

    kubectl.run("delete", "pod", "sleeper", "-n", namespace, "--wait=false")
    eventually(lambda: gone(kubectl, namespace, "sleeper"), timeout=30, what="pod removed")
    assert marker.exists(), "the process was not sent SIGTERM"
    assert not pid_file.exists(), "the pid file outlived its process"


ECHO_SERVER = """
import http.server, os
class Name(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_NAME"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer((os.environ["POD_IP"], 8000), Name).serve_forever()
"""


def test_node_port_service_reaches_each_ready_pod_on_its_own_ip(
    kubectl: Kubectl, namespace: str
) -> None:
    """Two pods serve the same port, each on its own address; the runner's node port
    forwards connections to both, round robin, and stops at a pod being deleted."""
    env = [{"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}} for n, f in
           [("POD_NAME", "metadata.name"), ("POD_IP", "status.podIP")]]  # fmt: skip
    probe = {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1}
    for name in ("echo-a", "echo-b"):
        manifest = json.loads(pod_manifest(name, python(ECHO_SERVER), env=env))
        manifest["metadata"]["labels"]["app"] = "echo"
        manifest["spec"]["containers"][0]["readinessProbe"] = probe
        kubectl.apply(json.dumps(manifest), namespace)
    ports = [{"port": 80, "targetPort": 8000}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "labels": {PART_OF_LABEL: PART_OF}},
        "spec": {"type": "NodePort", "selector": {"app": "echo"}, "ports": ports},
    }
    kubectl.apply(json.dumps(service), namespace)
    node_port = kubectl.json("get", "service", "echo", "-n", namespace)["spec"]["ports"][0]
    url = f"http://127.0.0.1:{node_port['nodePort']}/"

    def answers() -> set[str]:
        seen = set()
        for _ in range(4):
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    seen.add(response.read().decode())
            except OSError:
                pass
        return seen

    eventually(lambda: answers() == {"echo-a", "echo-b"}, timeout=30, what="both pods answer")
    kubectl.run("delete", "pod", "echo-a", "-n", namespace, "--wait=false")
    eventually(lambda: answers() == {"echo-b"}, timeout=30, what="only echo-b answers")


def test_process_ignoring_sigterm_is_killed_after_the_grace_period(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    script = f"""
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open({str(pid_file)!r}, "w").write(str(os.getpid()))
while True:
    time.sleep(0.1)
"""
    manifest = pod_manifest("stubborn", python(script), terminationGracePeriodSeconds=2)
    kubectl.apply(manifest, namespace)
    eventually(lambda: ready(kubectl, namespace, "stubborn"), timeout=30, what="Ready")
    pid = int(eventually(lambda: pid_file.read_text() or None, timeout=10, what="pid"))

    deleted = time.monotonic()
    kubectl.run("delete", "pod", "stubborn", "-n", namespace, "--wait=false")
    eventually(lambda: gone(kubectl, namespace, "stubborn"), timeout=30, what="pod removed")
    assert time.monotonic() - deleted >= 2, "removed before its grace period"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_restart_policy_always_restarts_an_exiting_process(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(pod_manifest("flaky", python("import sys; sys.exit(3)")), namespace)

    def restarted_twice() -> dict[str, Any] | None:
        status = pod(kubectl, namespace, "flaky")["status"].get("containerStatuses") or [{}]
        return status[0] if status[0].get("restartCount", 0) >= 2 else None

    status = eventually(restarted_twice, timeout=30, what="restartCount 2")
    assert status["lastState"]["terminated"]["exitCode"] == 3


def test_restart_policy_never_ends_in_succeeded(kubectl: Kubectl, namespace: str) -> None:
    manifest = pod_manifest("once", python("print('done')"), restartPolicy="Never")
    kubectl.apply(manifest, namespace)

    def finished() -> str | None:
        phase: str = pod(kubectl, namespace, "once")["status"].get("phase", "")
        return phase if phase in ("Succeeded", "Failed") else None

    assert eventually(finished, timeout=30, what="pod finished") == "Succeeded"


def test_readiness_probe_decides_ready(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    probe = {"exec": {"command": ["test", "-f", str(flag)]}, "periodSeconds": 1}
    script = "import time\nwhile True: time.sleep(1)"
    kubectl.apply(pod_manifest("probed", python(script), readinessProbe=probe), namespace)

    def started() -> dict[str, Any] | None:
        current = pod(kubectl, namespace, "probed")
        return current if current["status"].get("phase") == "Running" else None

    current = eventually(started, timeout=30, what="Running")
    assert current["status"]["containerStatuses"][0]["ready"] is False
    flag.touch()
    eventually(lambda: ready(kubectl, namespace, "probed"), timeout=15, what="Ready")


def test_missing_secret_holds_the_pod_pending_until_it_exists(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """Also shows that kwok leaves diffleet's pods alone: it would make this one Running."""
    out = tmp_path / "token"
    script = f"""
import os, time
open({str(out)!r}, "w").write(os.environ["TOKEN"])
while True:
    time.sleep(1)
"""
    secret = {"secretKeyRef": {"name": "api-token", "key": "token"}}
    env = [{"name": "TOKEN", "valueFrom": secret}]
    kubectl.apply(pod_manifest("needs-secret", python(script), env=env), namespace)

    def waiting_reason() -> str | None:
        statuses = pod(kubectl, namespace, "needs-secret")["status"].get("containerStatuses")
        return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None

    reason = eventually(waiting_reason, timeout=30, what="a waiting container")
    assert reason == "CreateContainerConfigError"
    status = pod(kubectl, namespace, "needs-secret")["status"]
    assert status["phase"] == "Pending"
    assert "podIP" not in status

    kubectl.run(
        "create", "secret", "generic", "api-token", "-n", namespace, "--from-literal=token=s3cret"
    )
    eventually(lambda: ready(kubectl, namespace, "needs-secret"), timeout=30, what="Ready")
    assert eventually(lambda: out.exists() and out.read_text(), timeout=10, what="env") == "s3cret"


def test_pods_without_the_label_are_left_to_kwok(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(pod_manifest("foreign", ["false"], labelled=False), namespace)

    current = eventually(lambda: ready(kubectl, namespace, "foreign"), timeout=30, what="Ready")
    assert current["status"]["podIP"] != "127.0.0.1"  # kwok's address, not the runner's
    assert f"{namespace}/foreign" not in {p["pod"] for p in runner_report()}


WORKER_ROLE = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: test-worker}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: test-worker}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: test-worker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: test-worker}
subjects: [{kind: ServiceAccount, name: test-worker}]
"""


def worker_queue_exists(name: str) -> bool:
    async def declared() -> bool:
        amqp_url = settings_from(Settings, stack_exports()).amqp_url
        connection = await aio_pika.connect(amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True

    return asyncio.run(declared())


def test_simulated_workers_share_one_process_and_announce_their_leases(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(WORKER_ROLE, namespace)
    names = [f"sim-worker-{i}" for i in range(3)]
    pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
    env: list[dict[str, Any]] = [
        {"name": "DIFFLEET_WORKER_SIMULATE", "value": "true"},
        {"name": "DIFFLEET_WORKER_POOL", "value": "t4"},
        {"name": "DIFFLEET_WORKER_FLEET_NAMESPACE", "value": namespace},
        {"name": "DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS", "value": "1"},
        {"name": "DIFFLEET_WORKER_WORKER_ID", "valueFrom": pod_name},
        # The pod's own settings of the backing services, not the runner's, hold.
        {"name": "DIFFLEET_QUEUE_PREFIX", "value": namespace},
    ]
    for name in names:
        manifest = pod_manifest(
            name, ["diffleet-worker"], env=env, serviceAccountName="test-worker"
        )
        kubectl.apply(manifest, namespace)

    def leases() -> set[str] | None:
        found = kubectl.json("get", "leases", "-n", namespace)["items"]
        held = {lease["metadata"]["name"] for lease in found}
        return held if held >= set(names) else None

    eventually(leases, timeout=60, what="the workers' Leases")
    for name in names:
        log = ROOT / ".diffleet" / "logs" / "pods" / f"{namespace}_{name}.log"
        assert f"worker {name} serving pool t4" in log.read_text(), "its log is its pod's"
    hosted = [p for p in runner_report() if p["pod"].startswith(f"{namespace}/")]
    assert {p["kind"] for p in hosted} == {"hosted"}
    assert len({p["pid"] for p in hosted}) == 1, "one interpreter hosts them all"
    assert worker_queue_exists(Topology(prefix=namespace).worker_queue(names[1]))

    kubectl.run("delete", "pod", names[0], "-n", namespace, "--wait=false")
    eventually(lambda: gone(kubectl, namespace, names[0]), timeout=30, what="pod removed")
    remaining = {
        lease["metadata"]["name"]
        for lease in kubectl.json("get", "leases", "-n", namespace)["items"]
    }
    assert names[0] not in remaining, "the drained worker released its Lease"
    assert set(names[1:]) <= remaining


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["diffleet-worker"], "hosted"),
        # Any other argument makes the worker a process of its own, reading KUBECONFIG.
        (["diffleet-worker", "--replicas", "1"], "process"),
    ],
)
def test_worker_pod_under_its_service_account_announces_its_lease(
    kubectl: Kubectl, command: list[str], kind: str
) -> None:
    """The RBAC of manifests/rbac/worker.yaml, exercised by a worker pod's own token."""
    kubectl.run("apply", "-f", str(ROOT / "manifests" / "rbac" / "worker.yaml"))
    name = f"test-worker-{uuid.uuid4().hex[:8]}"
    pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
    env: list[dict[str, Any]] = [
        {"name": "DIFFLEET_WORKER_SIMULATE", "value": "true"},
        {"name": "DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS", "value": "1"},
        {"name": "DIFFLEET_WORKER_WORKER_ID", "valueFrom": pod_name},
    ]
    manifest = pod_manifest(name, command, env=env, serviceAccountName=FLEET_ACCOUNT)
    kubectl.apply(manifest, FLEET_NAMESPACE)
    try:
        lease = eventually(
            lambda: kubectl.json("get", "lease", name, "-n", FLEET_NAMESPACE),
            timeout=60,
            what="the worker's Lease",
        )
        assert lease["spec"]["holderIdentity"] == name
        ran = {p["pod"]: p["kind"] for p in runner_report()}
        assert ran[f"{FLEET_NAMESPACE}/{name}"] == kind
    finally:
        kubectl.run("delete", "pod", name, "-n", FLEET_NAMESPACE, "--wait=false", check=False)
    eventually(lambda: gone(kubectl, FLEET_NAMESPACE, name), timeout=30, what="pod removed")
    found = kubectl.run("get", "lease", name, "-n", FLEET_NAMESPACE, "--ignore-not-found")
    assert not found.stdout.strip(), "the worker released its Lease when drained"
