"""The local control plane is real Kubernetes: API server, scheduler, controllers, GPU nodes."""

import json
from typing import Any

from tests.support.polling import eventually
from tests.support.stack import ROOT, Kubectl, read_env_file


def test_apiserver_reports_the_pinned_version(kubectl: Kubectl) -> None:
    pinned = read_env_file(ROOT / "hack" / "versions.env")["KUBERNETES_VERSION"]
    version = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def test_h100_pool_has_ready_gpu_nodes(kubectl: Kubectl) -> None:
    nodes = kubectl.json("get", "nodes", "-l", "diffleet.io/pool=h100")["items"]
    assert len(nodes) >= 2
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81920"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node[
            "spec"
        ]["taints"]


def gpu_pod(name: str, pool: str, gpus: int) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeSelector: {{diffleet.io/pool: {pool}}}
  tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
  containers:
  - name: main
    image: registry.local/diffleet-worker:test
    resources:
      limits: {{nvidia.com/gpu: {gpus}}}
"""


def test_gpu_pod_is_scheduled_onto_its_pool_and_runs(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(gpu_pod("one-gpu", "a100", 1), namespace)

    def running() -> dict[str, Any] | None:
        pod: dict[str, Any] = kubectl.json("get", "pod", "one-gpu", "-n", namespace)
        return pod if pod["status"].get("phase") == "Running" else None

    pod = eventually(running, timeout=60, what="pod one-gpu Running")
    node = kubectl.json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["diffleet.io/pool"] == "a100"


def test_pod_asking_for_too_many_gpus_stays_pending(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(gpu_pod("too-many", "a100", 16), namespace)

    def failed_scheduling() -> list[dict[str, Any]] | None:
        events: list[dict[str, Any]] = kubectl.json(
            "get", "events", "-n", namespace,
            "--field-selector", "involvedObject.name=too-many,reason=FailedScheduling",
        )["items"]  # fmt: skip
        return events or None

    events = eventually(failed_scheduling, timeout=60, what="FailedScheduling event")
    assert "nvidia.com/gpu" in events[0]["message"]
    pod = kubectl.json("get", "pod", "too-many", "-n", namespace)
    assert pod["status"]["phase"] == "Pending"


def test_deployment_gets_its_replicas(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      containers: [{name: web, image: registry.local/web:test}]
""",
        namespace,
    )

    def running_pods() -> int | None:
        pods = kubectl.json("get", "pods", "-n", namespace, "-l", "app=web")["items"]
        count = sum(1 for pod in pods if pod["status"].get("phase") == "Running")
        return count if count == 3 else None

    assert eventually(running_pods, timeout=90, what="3 Running web pods") == 3


def test_generationjob_applies_and_lists(kubectl: Kubectl, namespace: str) -> None:
    example = (ROOT / "manifests" / "examples" / "txt2img.yaml").read_text()
    kubectl.apply(example, namespace)
    listed = kubectl.run(
        "get", "generationjobs.diffleet.io", "-n", namespace, "-o", "name"
    ).stdout.split()
    assert listed == ["generationjob.diffleet.io/red-circle"]
    assert kubectl.run("get", "gj", "-n", namespace, "red-circle").stdout.startswith("NAME")


def test_generationjob_without_prompt_is_rejected(kubectl: Kubectl, namespace: str) -> None:
    result = kubectl.run(
        "apply", "-n", namespace, "-f", "-", check=False,
        stdin="apiVersion: diffleet.io/v1alpha1\nkind: GenerationJob\n"
        "metadata: {name: no-prompt}\nspec: {model: micro-shapes}\n",
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        'spec.prompt: Invalid value: "object": prompt must not be empty unless mode is inpaint'
        in result.stderr
    )
