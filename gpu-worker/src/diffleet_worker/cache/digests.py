"""Digests of artifacts on disk, streamed: a file's sha256; a folder's manifest digest
(diffleet_core.storage.manifest_digest over its files' sha256)."""

import hashlib
from pathlib import Path

from diffleet_core.storage import manifest_digest

CHUNK_BYTES = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(root: Path) -> dict[str, Path]:
    """The files under `root` by relative POSIX path."""
    return {path.relative_to(root).as_posix(): path for path in root.rglob("*") if path.is_file()}


def digest_of(path: Path) -> str:
    """The digest a ModelRef names for this artifact (a file or a diffusers folder)."""
    if path.is_dir():
        files = folder_files(path)
        return manifest_digest({name: sha256_file(file) for name, file in files.items()})
    return sha256_file(path)


def size_of(path: Path) -> int:
    """Bytes of a file, or of all files in a folder."""
    if path.is_dir():
        return sum(file.stat().st_size for file in folder_files(path).values())
    return path.stat().st_size
