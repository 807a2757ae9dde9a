"""A GPUPool's worker pod (diffleet_operator.autoscaler.pods)."""

import re
from typing import Any

import pytest

from diffleet_core.resources.gpu_pool import GPUPoolSpec
from diffleet_operator.autoscaler.pods import pod_name, worker_pod
from diffleet_worker.config import WorkerSettings


def build(**spec: Any) -> dict[str, Any]:
    pool = GPUPoolSpec.model_validate({"gpuType": "a100", "vramGiB": 80, "maxReplicas": 4} | spec)
    return worker_pod(
        name="a100-x2b4z",
        namespace="diffleet-system",
        pool="a100",
        pool_uid="uid-1",
        spec=pool,
        image="diffleet-worker:test",
    )


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        var["name"]: var.get("value", var.get("valueFrom"))
        for var in pod["spec"]["containers"][0]["env"]
    }


def test_pod_names_are_the_pool_and_a_dns_safe_suffix() -> None:
    names = {pod_name("a100") for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"a100-[bcdfghjklmnpqrstvwxz2456789]{5}", name) for name in names)


def test_defaults_select_the_pools_gpu_nodes() -> None:
    pod = build()
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"] == {
        "diffleet.io/gpupool": "a100",
        "app.kubernetes.io/part-of": "diffleet",
        "app.kubernetes.io/component": "gpu-worker",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GPUPool",
            "name": "a100",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["nodeSelector"] == {"diffleet.io/pool": "a100"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert spec["serviceAccountName"] == "diffleet-worker"
    assert spec["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 600
    (container,) = spec["containers"]
    assert container["image"] == "diffleet-worker:test"
    assert container["command"] == ["diffleet-worker"]
    assert container["resources"] == {
        "requests": {"nvidia.com/gpu": 1},
        "limits": {"nvidia.com/gpu": 1},
    }
    assert env_of(pod) == {
        "DIFFLEET_WORKER_POOL": "a100",
        "DIFFLEET_WORKER_GPU_TYPE": "a100",
        "DIFFLEET_WORKER_VRAM_GIB": "80",
        "DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS": "600",
        "DIFFLEET_WORKER_WORKER_ID": {"fieldRef": {"fieldPath": "metadata.name"}},
        "DIFFLEET_WORKER_NODE": {"fieldRef": {"fieldPath": "spec.nodeName"}},
        "DIFFLEET_WORKER_FLEET_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }


def test_template_is_merged_and_the_operator_sets_the_workers_identity() -> None:
    pod = build(
        gpusPerWorker=2,
        vramGiB=7.5,
        drainSeconds=30,
        nodeSelector={"diffleet.io/pool": "t4"},
        tolerations=[{"operator": "Exists"}],
        template={
            "image": "example.com/worker:1",
            "imagePullPolicy": "IfNotPresent",
            "command": ["diffleet-worker", "--simulate"],
            "env": [
                {"name": "DIFFLEET_WORKER_SIMULATE", "value": "true"},
                {"name": "DIFFLEET_WORKER_POOL", "value": "not-this-one"},
            ],
            "envFrom": [{"secretRef": {"name": "s3"}}],
            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "8Gi"}},
            "serviceAccountName": "custom",
            "labels": {"team": "art", "diffleet.io/gpupool": "not-this-one"},
            "annotations": {"note": "x"},
            "priorityClassName": "gpu",
        },
    )
    meta, spec = pod["metadata"], pod["spec"]
    (container,) = spec["containers"]
    assert meta["labels"]["team"] == "art"
    assert meta["labels"]["diffleet.io/gpupool"] == "a100"
    assert meta["annotations"] == {"note": "x"}
    assert spec["nodeSelector"] == {"diffleet.io/pool": "t4"}
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["serviceAccountName"] == "custom"
    assert spec["priorityClassName"] == "gpu"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert container["image"] == "example.com/worker:1"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["diffleet-worker", "--simulate"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "nvidia.com/gpu": 2},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": 2},
    }
    env = env_of(pod)
    assert env["DIFFLEET_WORKER_SIMULATE"] == "true"
    assert env["DIFFLEET_WORKER_POOL"] == "a100"
    assert env["DIFFLEET_WORKER_VRAM_GIB"] == "7.5"
    assert env["DIFFLEET_WORKER_SHUTDOWN_GRACE_SECONDS"] == "30"
    assert [var["name"] for var in container["env"]].count("DIFFLEET_WORKER_POOL") == 1


def test_the_worker_reads_what_the_operator_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables' names are the worker's settings (gpu-worker's config.py)."""
    for key, value in env_of(build(drainSeconds=45)).items():
        monkeypatch.setenv(key, value if isinstance(value, str) else "from-the-downward-api")
    settings = WorkerSettings()
    assert (settings.pool, settings.gpu_type, settings.vram_gib) == ("a100", "a100", 80.0)
    assert settings.shutdown_grace_seconds == 45
    assert settings.worker_id == settings.node == settings.fleet_namespace


def test_a_worker_serving_metrics_is_annotated_for_prometheus_discovery() -> None:
    metrics_env = [{"name": "DIFFLEET_WORKER_METRICS_PORT", "value": "9400"}]
    annotated = build(template={"env": metrics_env})
    assert annotated["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9400",
        "prometheus.io/path": "/metrics",
    }
    overridden = build(
        template={"env": metrics_env, "annotations": {"prometheus.io/scrape": "false"}}
    )
    assert overridden["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
    assert "annotations" not in build()["metadata"]
