"""The chart as `helm template` renders it, with every optional object turned on: each
object conforms to its schema for the stack's Kubernetes version (kubeconform, offline),
checkov's Kubernetes checks pass with every suppression justified in the template, and the
chart's helm-unittest suites pass. No stack needed; each tool is built by `make setup`."""

import json
import subprocess
from pathlib import Path

import pytest

from hack.kube_schemas import ensure_schemas, pinned_versions
from tests.support.stack import ROOT

BIN = ROOT / ".diffleet" / "bin"
CHECKOV = ROOT / ".venv" / "bin" / "checkov"
CHART = ROOT / "charts" / "diffleet"
EVERY_OBJECT = Path(__file__).with_name("values-every-object.yaml")
# prometheus-operator's kinds: their CRDs are not the chart's, so no schema is at hand.
UNCHECKED_KINDS = ("ServiceMonitor", "PrometheusRule")
# Kinds values-every-object.yaml must render and kubeconform validate (beside the
# dashboards' ConfigMap). An admission policy of an API version the pinned Kubernetes
# lacks has no schema there, and fails: the stack's cluster would not serve it either.
EXPECTED_KINDS = {
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Service",
    "ClusterRole",
    "Job",
    "GPUPool",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "CustomResourceDefinition",
}
# What checkov reports as the reason of a suppression that gives none.
UNJUSTIFIED = "No comment provided"


def built(name: str) -> Path:
    """The tool `name` that `make setup` links into .diffleet/bin; fails the test without."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not built: `make setup` builds it (hack/build-tools.sh)")
    return path


def run(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release `diffleet` in diffleet-system, CRDs included, in one file."""
    result = run(
        built("helm"),
        *("template", "diffleet", CHART, "--namespace", "diffleet-system", "--include-crds"),
        *("--values", EVERY_OBJECT),
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path_factory.mktemp("chart") / "diffleet.yaml"
    path.write_text(result.stdout)
    return path


def test_every_rendered_object_conforms_to_its_schema(rendered: Path) -> None:
    kubernetes_version = pinned_versions()["KUBERNETES_VERSION"].lstrip("v")
    result = run(
        built("kubeconform"),
        *("-strict", "-summary", "-verbose", "-output", "json"),
        # One worker: parallel ones each compile the same 1.5 MB of definitions again.
        *("-n", "1"),
        *("-schema-location", ensure_schemas(), "-kubernetes-version", kubernetes_version),
        *("-skip", ",".join(UNCHECKED_KINDS)),
        rendered,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    problems = [
        resource
        for resource in report["resources"]
        if resource["status"] not in ("statusValid", "statusSkipped")
    ]
    assert not problems, json.dumps(problems, indent=1)
    assert result.returncode == 0, json.dumps(report["summary"])
    skipped = {r["kind"] for r in report["resources"] if r["status"] == "statusSkipped"}
    assert skipped == set(UNCHECKED_KINDS)
    valid = {(r["kind"], r["name"]) for r in report["resources"] if r["status"] == "statusValid"}
    missing = EXPECTED_KINDS - {kind for kind, _ in valid}
    assert not missing, f"not rendered: {sorted(missing)}"
    assert ("ConfigMap", "diffleet-dashboards") in valid


def test_checkov_passes_on_the_rendered_manifests(rendered: Path) -> None:
    result = run(
        CHECKOV,
        *("--file", rendered, "--framework", "kubernetes", "--compact", "--skip-download"),
        *("--output", "json"),
    )
    assert result.stdout.startswith("{"), result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    failed = [
        f"{check['check_id']} {check['check_name']}: {check['resource']}"
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    # checkov takes an annotation `checkov.io/skipN: "CKV_ID=reason"`; the reason is ours to
    # demand: a suppression says why the check does not fit diffleet.
    unjustified = [
        f"{check['check_id']}: {check['resource']}"
        for check in report["results"]["skipped_checks"]
        if check["check_result"].get("suppress_comment", "") in ("", UNJUSTIFIED)
    ]
    assert not unjustified, "suppressions without a reason:\n" + "\n".join(unjustified)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_chart_unit_suites_pass() -> None:
    suites = sorted((CHART / "tests").glob("*_test.yaml"))
    assert suites, "charts/diffleet/tests has no helm-unittest suite"
    result = run(built("helm-unittest"), "--strict", CHART)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
