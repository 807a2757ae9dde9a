"""Checking the header of an uploaded model (pure): safetensors accepted, pickle and
broken headers refused."""

import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import save

from diffleet_api.safetensors_header import HeaderRefusedError, parse_header


def safetensors_file() -> bytes:
    return save({"a": np.zeros((4, 3), dtype=np.float16), "b": np.ones(5, dtype=np.int64)})


def with_header(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_a_safetensors_file_is_accepted_and_its_length_known() -> None:
    data = safetensors_file()
    header = parse_header(data)
    assert header.tensors == 2
    assert header.file_bytes == len(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pickle.dumps({"weights": [1, 2, 3]}), "pickle"),
        (b"PK\x03\x04" + b"\0" * 64, "zip"),
        (b"\x05\0\0", "too short"),
        (struct.pack("<Q", 2**40) + b"{}", "header length"),
        (struct.pack("<Q", 100) + b"{}", "ends inside"),
        (struct.pack("<Q", 4) + b"nope", "not JSON"),
        (with_header([1, 2]), "not a JSON object"),
        (with_header({"t": {"dtype": "F99", "shape": [1], "data_offsets": [0, 1]}}), "dtype"),
        (with_header({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}), "needs 8"),
        (
            with_header({"t": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}),
            "expected 0",
        ),
        (with_header({"__metadata__": {"k": 1}}), "__metadata__"),
    ],
    ids=[
        "pickle",
        "torch-zip",
        "short",
        "huge-length",
        "truncated",
        "not-json",
        "not-object",
        "dtype",
        "size-mismatch",
        "hole",
        "metadata",
    ],
)
def test_broken_or_pickled_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(HeaderRefusedError, match=message):
        parse_header(data)
