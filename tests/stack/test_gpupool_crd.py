"""The API server enforces the GPUPool CRD: defaults, bounds, patterns, its CEL rules and
the closed worker template.

Every refused manifest is applied for real with `kubectl apply`; the error must name the
field and the broken rule, as a user reads it.
"""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.stack import Kubectl

pytestmark = pytest.mark.stack

VALID_POOL: dict[str, Any] = {"gpuType": "a100", "vramGiB": 80, "maxReplicas": 8}
DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


@pytest.fixture
def pool_name(kubectl: Kubectl) -> Iterator[str]:
    """A unique name for a GPUPool (cluster-scoped), deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    kubectl.run("delete", "gpupool", name, "--wait=false", "--ignore-not-found", check=False)
    kubectl.run(
        "patch", "gpupool", name, "--type=merge",
        "-p", '{"metadata":{"finalizers":null}}', check=False,
    )  # fmt: skip


def pool(name: str, spec: dict[str, Any]) -> str:
    """A GPUPool as JSON, which kubectl reads as YAML."""
    return json.dumps(
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GPUPool",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def changed(overrides: dict[str, Any]) -> dict[str, Any]:
    """VALID_POOL with `overrides` applied; an override of None removes the field."""
    result = {**VALID_POOL, **overrides}
    return {key: value for key, value in result.items() if value is not None}


def test_minimal_gpupool_shows_the_schema_defaults(kubectl: Kubectl, pool_name: str) -> None:
    kubectl.apply(pool(pool_name, VALID_POOL))
    spec = kubectl.json("get", "gp", pool_name)["spec"]
    assert spec == {
        **VALID_POOL,
        "gpusPerWorker": 1,
        "minReplicas": 0,
        "targetJobsPerWorker": 1,
        "scaleDownDelaySeconds": 60,
        "drainSeconds": 600,
        "tiers": [],
        "template": {},
    }


def test_full_gpupool_is_accepted_as_written(kubectl: Kubectl, pool_name: str) -> None:
    full = changed(
        {
            "gpusPerWorker": 2,
            "minReplicas": 1,
            "tiers": ["enterprise", "pro"],
            "nodeSelector": {"diffleet.io/pool": "a100-spot"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "template": {
                "image": "ghcr.io/diffleet/worker:dev",
                "imagePullPolicy": "IfNotPresent",
                "command": ["diffleet-worker"],
                "env": [
                    {"name": "DIFFLEET_WORKER_SIMULATE", "value": "true"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "worker-settings"}}],
                "resources": {"requests": {"cpu": 2, "memory": "8Gi"}},
                "serviceAccountName": "diffleet-worker",
                "labels": {"team": "ml"},
                "annotations": {"note": "demo"},
                "priorityClassName": "gpu-workers",
            },
        }
    )
    kubectl.apply(pool(pool_name, full))
    spec = kubectl.json("get", "gp", pool_name)["spec"]
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert spec["template"] == full["template"]
    assert (spec["tiers"], spec["nodeSelector"], spec["tolerations"]) == (
        full["tiers"],
        full["nodeSelector"],
        tolerations,
    )


MAX_RULE = "maxReplicas must be at least minReplicas"
ANY_RULE = "gpuType may not be any: a job's gpuClass any means every GPU type"
BAD_POOLS: list[tuple[str, dict[str, Any], str]] = [
    (
        "max-below-min",
        {"minReplicas": 3, "maxReplicas": 2},
        f'spec.maxReplicas: Invalid value: "object": {MAX_RULE}',
    ),
    ("missing-gpuType", {"gpuType": None}, "spec.gpuType: Required value"),
    ("missing-maxReplicas", {"maxReplicas": None}, "spec.maxReplicas: Required value"),
    ("gpuType-not-dns", {"gpuType": "A100"}, f"spec.gpuType in body should match '{DNS_LABEL}'"),
    ("gpuType-any", {"gpuType": "any"}, f'spec.gpuType: Invalid value: "string": {ANY_RULE}'),
    (
        "negative-minReplicas",
        {"minReplicas": -1},
        "spec.minReplicas in body should be greater than or equal to 0",
    ),
    (
        "negative-drainSeconds",
        {"drainSeconds": -5},
        "spec.drainSeconds in body should be greater than or equal to 0",
    ),
    (
        "maxReplicas-1001",
        {"maxReplicas": 1001},
        "spec.maxReplicas in body should be less than or equal to 1000",
    ),
    (
        "gpusPerWorker-0",
        {"gpusPerWorker": 0},
        "spec.gpusPerWorker in body should be greater than or equal to 1",
    ),
    ("vramGiB-0", {"vramGiB": 0}, "spec.vramGiB in body should be greater than or equal to 1"),
    ("unknown-tier", {"tiers": ["gold"]}, 'spec.tiers[0]: Unsupported value: "gold"'),
    (
        "unknown-template-field",
        {"template": {"image": "worker:dev", "volumes": []}},
        'unknown field "spec.template.volumes"',
    ),
    (
        "bad-quantity",
        {"template": {"resources": {"limits": {"memory": "lots"}}}},
        "spec.template.resources.limits.memory in body should match",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [case[1:] for case in BAD_POOLS],
    ids=[case[0] for case in BAD_POOLS],
)
def test_bad_gpupool_is_refused_naming_the_field(
    kubectl: Kubectl, pool_name: str, overrides: dict[str, Any], error: str
) -> None:
    result = kubectl.run(
        "apply", "--validate=strict", "-f", "-", stdin=pool(pool_name, changed(overrides)),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0, f"accepted: {result.stdout.strip()}"
    assert error in result.stderr


def test_gpupool_name_must_be_a_dns_label(kubectl: Kubectl) -> None:
    result = kubectl.run("apply", "-f", "-", stdin=pool("a100.spot", VALID_POOL), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout.strip()}"
    assert "the name of a GPUPool must be a DNS label" in result.stderr


def test_gpupool_lists_with_its_printer_columns(kubectl: Kubectl, pool_name: str) -> None:
    kubectl.apply(pool(pool_name, VALID_POOL))
    header, row = kubectl.run("get", "gp", pool_name).stdout.splitlines()
    assert header.split() == [
        "NAME", "TYPE", "DESIRED", "READY", "BUSY", "QUEUED", "MIN", "MAX", "AGE",
    ]  # fmt: skip
    assert row.split()[:2] == [pool_name, "a100"]


def test_kubectl_explain_describes_the_spec(kubectl: Kubectl) -> None:
    assert "DNS label" in kubectl.run("explain", "gpupool.spec.gpuType").stdout
    node_selector = kubectl.run("explain", "gpupool.spec.nodeSelector").stdout
    assert "diffleet.io/pool: <name of the GPUPool>" in node_selector
    template = kubectl.run("explain", "gpupool.spec.template").stdout
    for field in ("image", "env", "envFrom", "resources", "serviceAccountName"):
        assert f"  {field}\t" in template, field
