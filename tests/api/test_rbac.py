"""The API's ServiceAccount may do what the API does, and nothing more."""

import pytest

from tests.support.stack import ROOT, Kubectl

MANIFEST = ROOT / "manifests" / "rbac" / "api.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:diffleet-system:diffleet-api"


@pytest.fixture(scope="module")
def applied(kubectl: Kubectl) -> Kubectl:
    kubectl.run("apply", "-f", str(MANIFEST))
    return kubectl


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", "generationjobs.diffleet.io", True),
        ("watch", "generationjobs.diffleet.io", True),
        ("patch", "generationjobs.diffleet.io", True),
        ("create", "trainingjobs.diffleet.io", True),
        ("patch", "trainingjobs.diffleet.io", True),
        ("delete", "trainingjobs.diffleet.io", False),
        ("patch", "trainingjobs.diffleet.io/status", False),
        ("list", "modelcaches.diffleet.io", True),
        ("create", "modelcaches.diffleet.io", True),
        ("delete", "modelcaches.diffleet.io", False),
        ("list", "stylepresets.diffleet.io", True),
        ("create", "stylepresets.diffleet.io", False),
        ("patch", "generationjobs.diffleet.io/status", False),
        ("list", "gpupools.diffleet.io", True),
        ("patch", "gpupools.diffleet.io", False),
        ("list", "leases.coordination.k8s.io", True),
        ("update", "leases.coordination.k8s.io", False),
        ("get", "secrets", False),
        ("create", "namespaces", False),
        ("create", "pods", False),
    ],
)
def test_api_service_account_is_least_privilege(
    applied: Kubectl, verb: str, resource: str, allowed: bool
) -> None:
    subresource = []
    if "/" in resource:
        resource, sub = resource.split("/")
        subresource = [f"--subresource={sub}"]
    answer = applied.run(
        "auth", "can-i", verb, resource, *subresource, "-n", "tenant-x", "--as", SERVICE_ACCOUNT,
        check=False,
    )  # fmt: skip
    assert answer.stdout.strip() == ("yes" if allowed else "no")


@pytest.mark.parametrize(("config_map", "allowed"), [("diffleet-policy", True), ("other", False)])
def test_api_service_account_reads_only_the_policy_config_map(
    applied: Kubectl, config_map: str, allowed: bool
) -> None:
    answer = applied.run(
        "auth", "can-i", "get", f"configmaps/{config_map}", "-n", "tenant-x",
        "--as", SERVICE_ACCOUNT, check=False,
    )  # fmt: skip
    assert answer.stdout.strip() == ("yes" if allowed else "no")


@pytest.mark.parametrize(("namespace", "allowed"), [("default", True), ("tenant-x", False)])
def test_api_service_account_lists_events_only_where_gpupools_get_theirs(
    applied: Kubectl, namespace: str, allowed: bool
) -> None:
    answer = applied.run(
        "auth", "can-i", "list", "events", "-n", namespace, "--as", SERVICE_ACCOUNT, check=False
    )
    assert answer.stdout.strip() == ("yes" if allowed else "no")
