"""Karpenter's kwok provider gives a pending GPU pod a node of its pool, and removes the
node once it is empty (consolidationPolicy WhenEmpty)."""

import time
from typing import Any

import pytest

from tests.support.groups import KARPENTER
from tests.support.polling import eventually
from tests.support.stack import Kubectl, stack_config

pytestmark = [pytest.mark.stack, KARPENTER]

POOL = "t4"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def karpenter_gpu_pod(name: str) -> str:
    # karpenter.sh/nodepool is on Karpenter's nodes only, so no static t4 node can take it.
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeSelector: {{diffleet.io/pool: {POOL}, karpenter.sh/nodepool: {POOL}}}
  tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
  containers:
  - name: main
    image: registry.local/diffleet-worker:test
    resources:
      limits: {{nvidia.com/gpu: 1}}
"""


def ready(node: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
    return conditions.get("Ready") == "True"


def test_a_pending_gpu_pod_gets_a_node_that_goes_when_empty(
    kubectl: Kubectl, namespace: str
) -> None:
    specs = [spec.split(":") for spec in stack_config()["KWOK_POOLS"].split()]
    [_, gpu_type, gpus, memory, _] = next(spec for spec in specs if spec[0] == POOL)
    created = time.monotonic()
    kubectl.apply(karpenter_gpu_pod("needs-a-node"), namespace)

    def bound_to_a_ready_node() -> dict[str, Any] | None:
        pod = kubectl.json("get", "pod", "needs-a-node", "-n", namespace)
        node_name = pod["spec"].get("nodeName")
        if not node_name:
            return None
        node: dict[str, Any] = kubectl.json("get", "node", node_name)
        return node if ready(node) else None

    node = eventually(bound_to_a_ready_node, timeout=90, what="pod bound to a Ready node")
    provisioned = time.monotonic() - created
    name = node["metadata"]["name"]
    labels = node["metadata"]["labels"]
    assert labels["karpenter.sh/nodepool"] == POOL
    assert labels["diffleet.io/pool"] == POOL
    assert labels["nvidia.com/gpu.product"] == gpu_type
    assert labels["nvidia.com/gpu.memory"] == memory
    assert labels["node.kubernetes.io/instance-type"] == f"gpu-{POOL}"
    assert labels["type"] == "kwok"  # what the stack's kwok manages: it keeps the node Ready
    assert node["spec"]["taints"] == [GPU_TAINT]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == gpus
    [claim] = [
        claim
        for claim in kubectl.json("get", "nodeclaims")["items"]
        if claim["status"].get("nodeName") == name
    ]
    assert claim["metadata"]["labels"]["karpenter.sh/nodepool"] == POOL

    kubectl.run("delete", "pod", "needs-a-node", "-n", namespace)
    deleted = time.monotonic()

    def node_gone() -> bool:
        return not kubectl.run("get", "node", name, "--ignore-not-found", "-o", "name").stdout

    eventually(node_gone, timeout=120, interval=1, what=f"empty node {name} removed")
    removed = time.monotonic() - deleted
    print(
        f"karpenter: pod created -> bound to a Ready node {provisioned:.1f}s, "
        f"pod deleted -> node gone {removed:.1f}s"
    )
