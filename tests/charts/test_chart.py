"""The Helm chart (charts/diffleet): its CRDs are the repository's, manifests/ is its render,
`helm lint --strict` passes, an install without a Secret it needs fails naming the value,
and the optional objects come only from values. Static: helm only, no cluster."""

import filecmp
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "diffleet"
HELM = ROOT / ".diffleet" / "bin" / "helm"
SECRETS = {
    "amqp": "diffleet-amqp",
    "database": "diffleet-database",
    "jwt": "diffleet-jwt",
    "webhookSigning": "diffleet-webhook-signing",
    "s3": "diffleet-s3",
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make setup`")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, check=False
    )


def secret_flags(secrets: dict[str, str]) -> list[str]:
    return [f"--set=secrets.{name}.existingSecret={secret}" for name, secret in secrets.items()]


def render(*flags: str, secrets: dict[str, str] = SECRETS) -> list[dict[str, Any]]:
    """The objects of `helm template diffleet` (namespace diffleet-system)."""
    result = helm(
        "template", "diffleet", str(CHART), "--namespace=diffleet-system",
        *secret_flags(secrets), *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {obj["kind"] for obj in objects}


def test_chart_crds_are_the_repository_crds() -> None:
    names = sorted(path.name for path in (ROOT / "crds").glob("*.yaml"))
    assert sorted(path.name for path in (CHART / "crds").iterdir()) == names
    _, mismatch, errors = filecmp.cmpfiles(ROOT / "crds", CHART / "crds", names, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_manifests_are_the_chart_render(tmp_path: Path) -> None:
    """manifests/rbac, manifests/admission and manifests/styles are what
    hack/render-manifests.sh writes."""
    subprocess.run(
        [str(ROOT / "hack" / "render-manifests.sh"), str(tmp_path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    rendered = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.yaml"))
    assert rendered == [
        Path("manifests/admission/generationjob-finalizer.yaml"),
        Path("manifests/rbac/api.yaml"),
        Path("manifests/rbac/operator.yaml"),
        Path("manifests/rbac/worker.yaml"),
        Path("manifests/styles/presets.yaml"),
    ]
    stale = [
        str(path) for path in rendered if (ROOT / path).read_text() != (tmp_path / path).read_text()
    ]
    assert stale == [], "run hack/render-manifests.sh and commit manifests/"


def test_lint_strict_passes_on_the_default_values() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_install_without_a_secret_fails_naming_the_value(missing: str) -> None:
    secrets = {name: secret for name, secret in SECRETS.items() if name != missing}
    result = helm(
        "template", "diffleet", str(CHART), "--namespace=diffleet-system", *secret_flags(secrets)
    )
    assert result.returncode != 0
    assert f"secrets.{missing}.existingSecret is required" in result.stderr


def test_a_service_account_role_replaces_the_s3_secret() -> None:
    secrets = {name: secret for name, secret in SECRETS.items() if name != "s3"}
    objects = render("--set=secrets.s3.useServiceAccountRole=true", secrets=secrets)
    env = [
        var["name"]
        for obj in objects
        if obj["kind"] == "Deployment"
        for var in obj["spec"]["template"]["spec"]["containers"][0]["env"]
    ]
    assert "DIFFLEET_AMQP_URL" in env
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_default_render_has_no_gpupool_nor_admission_policy() -> None:
    found = kinds(render())
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= found
    assert not found & {"GPUPool", "MutatingAdmissionPolicy", "ServiceMonitor"}


def test_values_add_gpupools_and_the_admission_policy() -> None:
    objects = render(
        '--set-json=gpuPools=[{"name": "l4", "gpuType": "l4", "vramGiB": 24, "maxReplicas": 4,'
        ' "template": {"env": [{"name": "DIFFLEET_WORKER_THREADS", "value": "4"}]}}]',
        "--set=admissionPolicy.enabled=true",
    )
    pools = [obj for obj in objects if obj["kind"] == "GPUPool"]
    assert [pool["metadata"]["name"] for pool in pools] == ["l4"]
    assert pools[0]["metadata"]["labels"]["diffleet.io/fleet"] == "diffleet-system"
    template = pools[0]["spec"]["template"]
    assert template["serviceAccountName"] == "diffleet-worker"
    # The platform's settings first, the pool's own after them.
    assert [var["name"] for var in template["env"]][-1] == "DIFFLEET_WORKER_THREADS"
    assert "DIFFLEET_AMQP_URL" in [var["name"] for var in template["env"]]
    assert {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"} <= kinds(objects)


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a Deployment's or Job's pod template, or of a GPUPool's."""
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    if obj["kind"] == "GPUPool":
        return [template]
    return list(pod.get("containers") or [])


def test_the_default_render_keeps_development_mode_off() -> None:
    """The development credentials are accepted only where the local stack asks for it."""
    values = [
        env["value"]
        for obj in render()
        for container in containers(obj)
        for env in container.get("env", [])
        if env["name"] == "DIFFLEET_DEVELOPMENT_MODE"
    ]
    assert values
    assert set(values) == {"false"}
