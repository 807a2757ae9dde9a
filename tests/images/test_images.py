"""The component images, checked without a Docker engine (none runs here): each Dockerfile
statically (checkov and the project's own rules), and each component's locked
dependencies installed into a clean virtual environment, as its image's build does."""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.stack import ROOT, read_env_file

UV = ROOT / ".diffleet" / "bin" / "uv"
MEMBERS = ("core", "operator", "api", "gpu-worker")


@dataclass(frozen=True)
class Image:
    directory: str  # the component's folder, which holds its Dockerfile
    package: str
    module: str  # imported to prove the environment runs the component
    scripts: tuple[str, ...]
    extras: tuple[str, ...]
    foreign: tuple[str, ...]  # distributions of the other components that must be absent


IMAGES = (
    Image(
        "operator",
        "diffleet-operator",
        "diffleet_operator.main",
        ("diffleet-operator",),
        (),
        ("fastapi", "torch", "diffusers", "psycopg"),
    ),
    Image(
        "api",
        "diffleet-api",
        "diffleet_api.main",
        ("diffleet-api", "diffleet-admin"),
        (),
        ("kopf", "torch", "diffusers"),
    ),
    Image(
        "gpu-worker",
        "diffleet-worker",
        "diffleet_worker.main",
        ("diffleet-worker",),
        ("cuda",),
        ("fastapi", "kopf", "psycopg"),
    ),
)


def dockerfile(image: Image) -> str:
    return (ROOT / image.directory / "Dockerfile").read_text()


def test_checkov_passes_every_dockerfile_with_justified_skips() -> None:
    files = [str(ROOT / image.directory / "Dockerfile") for image in IMAGES]
    args = [arg for path in files for arg in ("-f", path)]
    checkov = str(ROOT / ".venv" / "bin" / "checkov")
    result = subprocess.run(
        [checkov, *args, "--framework", "dockerfile", "--skip-download", "--quiet", "--compact"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    for path in files:
        for check, reason in re.findall(r"checkov:skip=(\w+):?(.*)", Path(path).read_text()):
            assert reason.strip(), f"{path}: the skip of {check} gives no reason"


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.directory)
def test_dockerfile_builds_only_its_component_as_a_non_root_user(image: Image) -> None:
    text = dockerfile(image)
    copied = set(re.findall(r"^COPY (?!--from)(\S+) \S+$", text, re.MULTILINE))
    sources = {path for path in copied if "pyproject.toml" not in path and path != "uv.lock"}
    assert sources == {"core", image.directory}, "only core and the component's sources"
    syncs = re.findall(r"uv sync (.*)", text)
    assert syncs
    assert all("--frozen" in sync and "--no-dev" in sync for sync in syncs)
    assert all(f"--package {image.package}" in sync for sync in syncs)
    for extra in image.extras:
        assert all(f"--extra {extra}" in sync for sync in syncs)
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "USER 10001" in final_stage
    assert f'ENTRYPOINT ["{image.scripts[0]}"]' in final_stage
    uv_image = re.search(r"ghcr.io/astral-sh/uv:(\S+)", text)
    assert uv_image
    assert uv_image[1] == read_env_file(ROOT / "hack" / "versions.env")["UV_VERSION"]


def test_the_gpu_image_starts_from_a_cuda_runtime_base() -> None:
    bases = re.findall(r"^FROM (\S+)", dockerfile(IMAGES[2]), re.MULTILINE)
    assert bases
    assert all(re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-\S+", base) for base in bases)


# What reaching the package index takes on this machine (a proxy, its CA bundle), kept
# in the otherwise clean environment: a wheel not in uv's cache is downloaded.
NETWORK_VARIABLES = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_CACHE_DIR",
)


def network_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in NETWORK_VARIABLES if name in os.environ}


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.directory)
def test_locked_dependencies_install_into_a_clean_environment(image: Image, tmp_path: Path) -> None:
    """What the image's `uv sync` steps do, from the lock, outside the workspace's .venv."""
    project = tmp_path / "app"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, project / name)
    for member in MEMBERS:
        (project / member).mkdir()
        shutil.copy(ROOT / member / "pyproject.toml", project / member / "pyproject.toml")
    for member in ("core", image.directory):
        shutil.copytree(ROOT / member / "src", project / member / "src")
    venv = tmp_path / "venv"
    extras = [arg for extra in image.extras for arg in ("--extra", extra)]
    package = ["--package", image.package, *extras]
    sync = subprocess.run(
        [str(UV), "sync", "--frozen", "--no-dev", "--no-editable", "--quiet", *package],
        cwd=project,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
            "UV_PROJECT_ENVIRONMENT": str(venv),
            "UV_PYTHON": "3.11",
            "UV_PYTHON_DOWNLOADS": "never",
        }
        | network_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert sync.returncode == 0, sync.stderr[-4000:]
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {image.module}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr[-4000:]
    for script in image.scripts:
        assert (venv / "bin" / script).exists(), f"console script {script} missing"
    installed = {
        path.name.split("-")[0].lower()
        for path in (venv / "lib" / "python3.11" / "site-packages").glob("*.dist-info")
    }
    assert not installed & set(image.foreign), "another component's dependencies"
