"""The first bytes of an uploaded model, checked before the rest is stored (pure).

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming each
tensor's dtype, shape and [begin, end) byte offsets (plus an optional `__metadata__` map of
strings), then the tensors' bytes. The offsets must tile the data exactly, each tensor's
size must match its dtype and shape, and the file must end where the last tensor does.
Pickle-based checkpoints (a pickle stream, or PyTorch's zip) run code when loaded: they
are named and refused.
"""

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

MAX_HEADER_BYTES = 100_000_000
"""The safetensors library's own bound."""
MAX_RANK = 64
"""Dimensions of a tensor at most (PyTorch's own limit)."""
MAX_SIZE = 2**64 - 1
"""A size or an offset is a u64 in the format."""
LENGTH_BYTES = 8
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


class HeaderRefusedError(Exception):
    def __init__(self, message: str, *, pickle: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.pickle = pickle


@dataclass(frozen=True)
class SafetensorsHeader:
    header_bytes: int
    """N, the JSON header's length."""
    data_bytes: int
    """Bytes of tensor data after the header."""
    tensors: int

    @property
    def file_bytes(self) -> int:
        return LENGTH_BYTES + self.header_bytes + self.data_bytes


def refuse_pickle(prefix: bytes) -> None:
    """Raises when the bytes start like a pickle stream or a PyTorch zip checkpoint."""
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        raise HeaderRefusedError(
            "this is a pickle stream (.bin/.ckpt/.pt): it runs code when loaded; upload"
            " safetensors",
            pickle=True,
        )
    if prefix.startswith(b"PK\x03\x04"):
        raise HeaderRefusedError(
            "this is a zip archive (a PyTorch .pt/.ckpt checkpoint holds a pickle); upload"
            " safetensors",
            pickle=True,
        )


def header_length(prefix: bytes) -> int:
    """N, from the first 8 bytes; raises when it cannot be a safetensors header."""
    refuse_pickle(prefix)
    if len(prefix) < LENGTH_BYTES:
        raise HeaderRefusedError(f"{len(prefix)} bytes is too short for a safetensors file")
    (length,) = struct.unpack("<Q", prefix[:LENGTH_BYTES])
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise HeaderRefusedError(
            f"safetensors header length {length} is outside 2..{MAX_HEADER_BYTES}"
        )
    return int(length)


def parse_header(prefix: bytes) -> SafetensorsHeader:
    """The header of a safetensors file from its first 8 + N bytes (more is ignored)."""
    length = header_length(prefix)
    raw = prefix[LENGTH_BYTES : LENGTH_BYTES + length]
    if len(raw) < length:
        raise HeaderRefusedError(f"the file ends inside its {length}-byte header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        # ValueError: not UTF-8, not JSON, or an integer of more than 4300 digits;
        # RecursionError: nested deeper than Python's JSON decoder goes.
        raise HeaderRefusedError(f"the safetensors header is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise HeaderRefusedError("the safetensors header is not a JSON object")
    check_metadata(header.pop("__metadata__", {}))
    spans = sorted(tensor_span(name, entry) for name, entry in header.items())
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise HeaderRefusedError(
                f"tensor {name!r} starts at {begin}, expected {end} (holes or overlaps)"
            )
        end = stop
    return SafetensorsHeader(header_bytes=length, data_bytes=end, tensors=len(spans))


def check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise HeaderRefusedError("__metadata__ must map strings to strings")


def tensor_span(name: str, entry: Any) -> tuple[int, int, str]:
    """(begin, end, name) of one tensor's bytes, after checking its entry."""
    if not isinstance(entry, dict):
        raise HeaderRefusedError(f"tensor {name!r}: its entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise HeaderRefusedError(f"tensor {name!r}: unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(map(is_size, shape)):
        raise HeaderRefusedError(
            f"tensor {name!r}: shape must be a list of at most {MAX_RANK} sizes"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(map(is_size, offsets))
        or offsets[0] > offsets[1]
    ):
        raise HeaderRefusedError(f"tensor {name!r}: data_offsets must be [begin, end]")
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise HeaderRefusedError(
            f"tensor {name!r}: {dtype} {shape} needs {expected} bytes,"
            f" data_offsets span {offsets[1] - offsets[0]}"
        )
    return offsets[0], offsets[1], name


def is_size(value: Any) -> bool:
    """A JSON integer from 0 to the format's u64 limit (true and false are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SIZE
