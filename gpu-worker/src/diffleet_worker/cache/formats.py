"""What may be loaded: single .safetensors files and diffusers folders without pickle
files (diffleet_core.storage.is_pickle). Checked on names, before any download."""

from pathlib import PurePosixPath

from diffleet_core.messages import ModelRef
from diffleet_core.resources.model_cache import ModelFormat
from diffleet_core.storage import is_pickle
from diffleet_worker.cache.errors import ModelRefusedError

SAFETENSORS_SUFFIX = ".safetensors"


def check_single_file(ref: ModelRef) -> None:
    """A `safetensors` model must be one .safetensors file."""
    if ref.format is ModelFormat.SAFETENSORS and not ref.source.lower().endswith(
        SAFETENSORS_SUFFIX
    ):
        raise ModelRefusedError(
            f"model {ref.namespace}/{ref.name}: {ref.source} is not a .safetensors file "
            "(only safetensors load; pickle formats are refused)"
        )


def check_folder(ref: ModelRef, paths: list[str]) -> None:
    """A diffusers folder (relative paths of its files) holds no pickle file and no path
    that leaves the folder."""
    unsafe = sorted(path for path in paths if is_pickle(path))
    if unsafe:
        raise ModelRefusedError(
            f"model {ref.namespace}/{ref.name}: pickle files are refused (only safetensors "
            f"load): {', '.join(unsafe[:5])}"
        )
    escaping = sorted(path for path in paths if not is_plain_relative(path))
    if escaping:
        raise ModelRefusedError(
            f"model {ref.namespace}/{ref.name}: file paths must stay inside the folder: "
            f"{', '.join(escaping[:5])}"
        )


def is_plain_relative(path: str) -> bool:
    """True for "unet/model.safetensors"; false for "", "/x", "a/../b", "a//b", "a/"."""
    parts = path.split("/")
    return (
        bool(path)
        and not PurePosixPath(path).is_absolute()
        and all(part not in ("", ".", "..") for part in parts)
    )
