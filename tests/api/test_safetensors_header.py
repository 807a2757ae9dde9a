"""Checking the header of an uploaded model (pure): safetensors accepted, pickle and
broken headers refused."""

import contextlib
import json
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save

from diffleet_api.safetensors_header import HeaderRefusedError, parse_header


def safetensors_file() -> bytes:
    return save({"a": np.zeros((4, 3), dtype=np.float16), "b": np.ones(5, dtype=np.int64)})


def with_header(header: object, data: bytes = b"") -> bytes:
    return with_raw_header(json.dumps(header).encode(), data)


def with_raw_header(raw: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(raw)) + raw + data


def tensor(**entry: object) -> bytes:
    """A header of one tensor "t", a valid U8 [2] at [0, 2] changed by `entry`."""
    return with_header({"t": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]} | entry})


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
        # Wrong JSON types, where a list or an object would be unhashable or uncountable.
        (tensor(dtype=["U8"]), "dtype"),
        (tensor(dtype={"U8": 1}), "dtype"),
        (tensor(dtype=None), "dtype"),
        (tensor(shape="2"), "shape"),
        (tensor(shape=[True, 1]), "shape"),
        (tensor(shape=[[2]]), "shape"),
        (tensor(shape=[2.0]), "shape"),
        (tensor(data_offsets={"begin": 0}), "data_offsets"),
        (tensor(data_offsets=[[0], [2]]), "data_offsets"),
        (tensor(data_offsets=[0, False]), "data_offsets"),
        (with_header({"t": [1, 2]}), "not an object"),
        (with_header({"__metadata__": ["k"]}), "__metadata__"),
        # Sizes: more dimensions than PyTorch has, sizes past the format's u64.
        (tensor(shape=[1] * 65), "at most 64"),
        (tensor(shape=[2**64]), "shape"),
        (tensor(data_offsets=[0, 2**64]), "data_offsets"),
        (tensor(data_offsets=[2, 0]), "data_offsets"),
        (with_raw_header(b'{"t": {"shape": [1' + b"0" * 5000 + b"]}}"), "not JSON"),
        # Nesting deeper than the JSON decoder recurses, and bytes that are not UTF-8.
        (with_raw_header(b'{"t": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "not JSON"),
        (with_raw_header(b'{"t": "\xff\xfe"}'), "not JSON"),
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
        "dtype-list",
        "dtype-object",
        "dtype-null",
        "shape-string",
        "shape-bool",
        "shape-nested",
        "shape-float",
        "offsets-object",
        "offsets-nested",
        "offsets-bool",
        "entry-list",
        "metadata-list",
        "rank-65",
        "dim-past-u64",
        "offset-past-u64",
        "offsets-reversed",
        "integer-5000-digits",
        "nesting-100000",
        "not-utf8",
    ],
)
def test_broken_or_pickled_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(HeaderRefusedError, match=message):
        parse_header(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)


@given(
    st.dictionaries(
        st.sampled_from(["t", "u", "__metadata__"]),
        st.fixed_dictionaries(
            {},
            optional={
                "dtype": st.sampled_from(["U8", "F32"]) | JSON_VALUES,
                "shape": st.lists(st.integers(-1, 4), max_size=3) | JSON_VALUES,
                "data_offsets": st.lists(st.integers(-1, 16), max_size=3) | JSON_VALUES,
            },
        )
        | JSON_VALUES,
    )
)
def test_any_json_header_is_accepted_or_refused_never_an_error(header: object) -> None:
    """Whatever the JSON, the answer is a header or a refusal (a 422), never another
    exception (a 500)."""
    with contextlib.suppress(HeaderRefusedError):
        parse_header(with_header(header, b"\0" * 64))
