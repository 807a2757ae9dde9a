"""Built models live outside the work tree, one folder per model and builder version:
`$DIFFLEET_CACHE/models/<name>-<version>`. The version is a hash of this package's
source and of the libraries that write the files, so changing either builds afresh."""

import hashlib
import os
import shutil
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
LIBRARIES = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "safetensors",
    "tokenizers",
    "spandrel",
)


def cache_root() -> Path:
    """$DIFFLEET_CACHE/models, defaulting as hack/lib.sh does."""
    configured = os.environ.get("DIFFLEET_CACHE")
    if configured:
        return Path(configured) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "diffleet" / "models"


def builder_version() -> str:
    """12 hex digits of the builders' source and the writing libraries' versions."""
    digest = hashlib.sha256()
    for source in sorted(PACKAGE.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    for library in LIBRARIES:
        digest.update(f"{library}=={version(library)}\n".encode())
    return digest.hexdigest()[:12]


def built(name: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The folder holding `name`, built by `build(folder)` when missing; and whether it
    was built now. A build goes to a private folder renamed into place, so concurrent
    callers never see half a model."""
    root = cache_root()
    final = root / f"{name}-{builder_version()}"
    if final.is_dir():
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{final.name}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        build(partial)
        partial.rename(final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final, True
