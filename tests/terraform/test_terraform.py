"""The Terraform of terraform/: formatted (`tofu fmt`), clean under tflint's terraform
ruleset, checkov passing with every suppression justified inline, and wired to the rest
of the repository: the release values it sets are the chart's, its GPUPools are the CRD's,
its NodePools label and taint nodes as core says a pool's nodes are. Static: no provider,
no cloud (terraform/README.md says what is not validated here)."""

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hcl2.api import load as load_hcl  # checkov's HCL parser, in the dev dependencies

from diffleet_core.resources.gpu_pool import GPU_RESOURCE, NODE_POOL_LABEL
from tests.support.stack import ROOT

TERRAFORM = ROOT / "terraform"
MODULES = TERRAFORM / "modules"
BIN = ROOT / ".diffleet" / "bin"
CHECKOV = ROOT / ".venv" / "bin" / "checkov"
SKIP = re.compile(r"checkov:skip=(\w+)(?::\s*(.*))?")


def built(name: str) -> Path:
    """The tool `name` that `make setup` links into .diffleet/bin; fails the test without."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not built: `make setup` builds it (hack/build-tools.sh)")
    return path


def run(*args: str | Path, cwd: Path = ROOT, timeout: float = 180) -> str:
    """Runs a check; asserts it exits 0 and returns what it printed."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def hcl(path: Path) -> dict[str, Any]:
    with path.open() as file:
        return load_hcl(file)


def local(path: Path, name: str) -> Any:
    """The value of `locals { name = ... }` in `path`, as python-hcl2 parses it (which
    wraps each attribute's value in a list)."""
    return next(block[name][0] for block in hcl(path)["locals"] if name in block)


def for_expression(path: Path, name: str) -> str:
    """The source of `name = [for ... : {...}]` in `path`, a list comprehension that
    python-hcl2 leaves as text."""
    pattern = rf"^  {name} = \[for .*?^  \}}\]$"
    match = re.search(pattern, path.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"{path}: no local {name} = [for ...]"
    return match.group(0)


def test_terraform_is_formatted() -> None:
    run(built("tofu"), "fmt", "-check", "-diff", "-recursive", TERRAFORM)


def test_tflint_passes_with_every_terraform_rule() -> None:
    # An absolute --config: with --recursive, a relative one is looked up in each module.
    config = TERRAFORM / ".tflint.hcl"
    run(built("tflint"), "--recursive", "--format=compact", f"--config={config}", cwd=TERRAFORM)


def test_checkov_passes_and_every_suppression_says_why() -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: `make setup` installs the dev dependencies")
    unjustified = [
        f"{path.relative_to(ROOT)}: {match.group(1)}"
        for path in TERRAFORM.rglob("*.tf")
        for match in SKIP.finditer(path.read_text())
        if len((match.group(2) or "").split()) < 4
    ]
    assert unjustified == [], "every checkov:skip needs `: <why>` on its line"
    run(CHECKOV, "-d", TERRAFORM, "--quiet", "--compact", "--skip-download", timeout=300)


def key_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the leaves Terraform sets (an interpolation is a leaf)."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths += key_paths(value, f"{path}.") if isinstance(value, dict) else [path]
    return paths


def test_release_values_are_the_charts_values() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "diffleet" / "values.yaml").read_text())
    values = local(MODULES / "diffleet" / "main.tf", "values")

    def known(path: str) -> bool:
        node = chart
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    assert [path for path in key_paths(values) if not known(path)] == []


def test_gpupools_set_only_fields_of_the_crd() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "gpupools.diffleet.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pools = for_expression(MODULES / "diffleet" / "main.tf", "gpu_pools")
    fields = set(re.findall(r"^ {4}(\w+) += ", pools, re.MULTILINE)) - {"name"}
    assert fields - set(spec["properties"]) == set()
    assert set(spec["required"]) <= fields


def test_node_pools_label_and_taint_nodes_as_gpupools_select() -> None:
    main = MODULES / "gpu-nodes" / "main.tf"
    node_pools = for_expression(main, "node_pools")
    assert re.search(rf'"{re.escape(NODE_POOL_LABEL)}" += name\n', node_pools)
    assert re.search(r'consolidationPolicy += "WhenEmpty"\n', node_pools)
    assert "taints       = [local.gpu_taint]" in node_pools
    taint = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
    assert local(main, "gpu_taint") == taint


def test_default_pools_are_h100_a100_and_t4_instances() -> None:
    variables = {
        name: block for entry in hcl(TERRAFORM / "variables.tf")["variable"]
        for name, block in entry.items()
    }  # fmt: skip
    pools = variables["gpu_pools"]["default"][0]
    assert {name: pool["instance_types"][0] for name, pool in pools.items()} == {
        "h100": "p5.48xlarge",
        "a100": "p4d.24xlarge",
        "t4": "g4dn.xlarge",
    }
    assert all(
        pool["gpu_memory_mib"] == memory
        for pool, memory in zip(pools.values(), (81920, 40960, 16384), strict=True)
    )
