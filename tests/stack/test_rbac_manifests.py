"""The worker's and the operator's ServiceAccounts may do what they do, and nothing more
(manifests/rbac/; the API's is tests/api/test_rbac.py)."""

import pytest

from tests.support.stack import ROOT, Kubectl

pytestmark = pytest.mark.stack

RBAC = ROOT / "manifests" / "rbac"
FLEET = "diffleet-system"
WORKER = f"system:serviceaccount:{FLEET}:diffleet-worker"
OPERATOR = f"system:serviceaccount:{FLEET}:diffleet-operator"


@pytest.fixture(scope="module")
def applied(kubectl: Kubectl) -> Kubectl:
    kubectl.run("apply", "-f", str(RBAC / "worker.yaml"), "-f", str(RBAC / "operator.yaml"))
    return kubectl


def can(kubectl: Kubectl, who: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` for `who`; RESOURCE/SUB asks about a subresource."""
    subresource = []
    if "/" in resource:
        resource, sub = resource.split("/")
        subresource = [f"--subresource={sub}"]
    scope = ["--all-namespaces"] if namespace == "*" else ["-n", namespace]
    answer = kubectl.run(
        "auth", "can-i", verb, resource, *subresource, *scope, "--as", who, check=False
    )
    return answer.stdout.strip() == "yes"


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("create", "leases.coordination.k8s.io", FLEET, True),
        ("patch", "leases.coordination.k8s.io", FLEET, True),
        ("delete", "leases.coordination.k8s.io", FLEET, True),
        ("create", "leases.coordination.k8s.io", "tenant-x", False),
        ("list", "leases.coordination.k8s.io", FLEET, False),
        ("list", "secrets", FLEET, False),
        ("get", "secrets", FLEET, False),
        ("create", "pods", FLEET, False),
        ("list", "modelcaches.diffleet.io", FLEET, False),
        ("patch", "generationjobs.diffleet.io/status", "tenant-x", False),
    ],
)
def test_worker_service_account_is_least_privilege(
    applied: Kubectl, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    assert can(applied, WORKER, verb, resource, namespace) is allowed


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("watch", "generationjobs.diffleet.io", "tenant-x", True),
        ("patch", "generationjobs.diffleet.io/status", "tenant-x", True),
        ("delete", "generationjobs.diffleet.io", "tenant-x", True),
        ("create", "generationjobs.diffleet.io", "tenant-x", False),
        ("patch", "modelcaches.diffleet.io/status", "tenant-x", True),
        ("watch", "trainingjobs.diffleet.io", "tenant-x", True),
        ("patch", "trainingjobs.diffleet.io/status", "tenant-x", True),
        ("delete", "trainingjobs.diffleet.io", "tenant-x", False),
        ("create", "modelcaches.diffleet.io", "tenant-x", True),
        ("delete", "modelcaches.diffleet.io", "tenant-x", False),
        ("watch", "gpupools.diffleet.io", "*", True),
        ("patch", "gpupools.diffleet.io/status", "*", True),
        ("update", "gpupools.diffleet.io/finalizers", "*", True),
        ("create", "gpupools.diffleet.io", "*", False),
        ("create", "pods", FLEET, True),
        ("delete", "pods", FLEET, True),
        ("create", "pods", "tenant-x", False),
        ("watch", "leases.coordination.k8s.io", "*", True),
        ("update", "leases.coordination.k8s.io", FLEET, True),
        ("update", "leases.coordination.k8s.io", "tenant-x", False),
        ("list", "namespaces", "*", True),
        ("create", "events", "tenant-x", True),
        ("get", "secrets", FLEET, False),
    ],
)
def test_operator_service_account_is_least_privilege(
    applied: Kubectl, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    assert can(applied, OPERATOR, verb, resource, namespace) is allowed
