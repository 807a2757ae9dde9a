"""Offline JSON schemas for kubeconform, so the chart checks need no network.

Kubernetes' own schemas come from the `kubernetes-validate` wheel (its version pinned in
hack/versions.env; the wheel is installed into the cache, never into the venv) for the
stack's Kubernetes minor. Their `$id` is dropped and their `$ref`s point at the
`_definitions.json` beside them, so kubeconform resolves them from disk. diffleet's CRD
schemas are generated from crds/*.yaml as the openapi2jsonschema script does. Both lie
where kubeconform's default -schema-location template looks:

    <root>/v<KUBERNETES_VERSION>-standalone[-strict]/<kind>-<group>-<version>.json

`ensure_schemas()` (or `python -m hack.kube_schemas`, which prints it) builds them once
into `$DIFFLEET_CACHE/kube-schemas/<key>` (the key carries the pinned versions and a hash of
the CRDs and this script) and returns <root>: pass it as
`kubeconform -schema-location <root> -kubernetes-version <KUBERNETES_VERSION>`.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
UV = ROOT / ".diffleet" / "bin" / "uv"
CRDS = ROOT / "crds"
DEFINITIONS = "_definitions.json"
INSTALL_TIMEOUT_S = 300


def pinned_versions() -> dict[str, str]:
    """KEY=VALUE pairs of hack/versions.env."""
    pairs = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


def cache_root() -> Path:
    """$DIFFLEET_CACHE/kube-schemas, defaulting as hack/lib.sh does."""
    configured = os.environ.get("DIFFLEET_CACHE")
    if configured:
        return Path(configured) / "kube-schemas"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "diffleet" / "kube-schemas"


def inputs_hash() -> str:
    """12 hex digits of the CRDs and of this script: a change to either rebuilds."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for crd in sorted(CRDS.glob("*.yaml")):
        digest.update(crd.name.encode() + b"\0" + crd.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def install_wheel(version: str, target: Path) -> Path:
    """The wheel's schema folder, the wheel installed (no dependencies) into `target`."""
    subprocess.run(
        [
            *(str(UV), "pip", "install", "--quiet", "--no-deps", "--target", str(target)),
            *("--python", sys.executable, f"kubernetes-validate=={version}"),
        ],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    return target / "kubernetes_validate" / "kubernetes-json-schema"


def local_refs(node: Any) -> Any:
    """`node` with every `$ref` to `.../_definitions.json#...` made relative to its folder."""
    if isinstance(node, dict):
        fixed = {key: local_refs(value) for key, value in node.items() if key != "$id"}
        ref = fixed.get("$ref")
        if isinstance(ref, str) and DEFINITIONS in ref:
            fixed["$ref"] = DEFINITIONS + ref.split(DEFINITIONS, 1)[1]
        return fixed
    if isinstance(node, list):
        return [local_refs(item) for item in node]
    return node


def copy_kubernetes(source: Path, destination: Path) -> None:
    """Every schema of `source` (one Kubernetes version), made local, into `destination`."""
    destination.mkdir(parents=True)
    for schema in source.glob("*.json"):
        if schema.name == "all.json":  # one oneOf of every kind: kubeconform never reads it
            continue
        fixed = local_refs(json.loads(schema.read_text()))
        (destination / schema.name).write_text(json.dumps(fixed))


def crd_json_schema(node: Any, *, strict: bool) -> Any:
    """An openAPIV3Schema as JSON Schema: nullable and int-or-string spelled out, and (when
    strict) no unknown fields where the CRD lists its fields and keeps no unknown ones."""
    if isinstance(node, list):
        return [crd_json_schema(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: crd_json_schema(value, strict=strict) for key, value in node.items()}
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if schema.get("x-kubernetes-int-or-string"):
        schema["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if (
        strict
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


def write_crds(destination: Path, *, strict: bool) -> None:
    """One schema per served version of every CRD in crds/, named as kubeconform looks."""
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        kind, group = spec["names"]["kind"], spec["group"]
        for version in spec["versions"]:
            schema = dict(version["schema"]["openAPIV3Schema"])
            # Objects carry these whether or not the CRD's schema lists them.
            schema["properties"] = {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                **schema.get("properties", {}),
            }
            name = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"
            converted = crd_json_schema(schema, strict=strict)
            (destination / name).write_text(json.dumps(converted))


def build(root: Path, kubernetes_version: str, wheel_version: str) -> None:
    """The schema folders of `kubernetes_version` under `root`."""
    minor = ".".join(kubernetes_version.lstrip("v").split(".")[:2])
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        schemas = install_wheel(wheel_version, Path(scratch) / "wheel")
        for strict in (False, True):
            suffix = "-strict" if strict else ""
            source = schemas / f"v{minor}.0-local{suffix}"
            if not source.is_dir():
                sys.exit(f"kubernetes-validate {wheel_version} has no schemas for {minor}")
            destination = root / f"{kubernetes_version}-standalone{suffix}"
            copy_kubernetes(source, destination)
            write_crds(destination, strict=strict)


def ensure_schemas() -> Path:
    """The schema root, built when missing. A build goes to a private folder renamed into
    place, so concurrent callers never see half of it."""
    versions = pinned_versions()
    kubernetes_version = versions["KUBERNETES_VERSION"]
    wheel_version = versions["KUBERNETES_VALIDATE_VERSION"]
    cache = cache_root()
    final = cache / f"{wheel_version}-{kubernetes_version}-{inputs_hash()}"
    if final.is_dir():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(dir=cache, prefix=".build-"))
    try:
        build(private, kubernetes_version, wheel_version)
        private.rename(final)
    except OSError:
        if not final.is_dir():  # a concurrent caller's rename won; anything else is an error
            raise
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return final


if __name__ == "__main__":
    print(ensure_schemas())
