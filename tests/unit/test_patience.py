"""`patiently` retries what a dependency's outage makes fail, within its patience."""

import asyncio
import time

import pytest

from diffleet_core.patience import patiently


def test_an_outage_shorter_than_the_patience_is_waited_out() -> None:
    calls: list[float] = []

    async def connect() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "connected"

    result = asyncio.run(
        patiently(connect, what="the broker", retry_on=(ConnectionError,), patience=10)
    )
    assert result == "connected"
    assert len(calls) == 3
    assert calls[2] - calls[1] >= 0.25  # the second pause is at least half of 1 s


def test_past_the_patience_the_last_error_is_raised() -> None:
    async def connect() -> str:
        raise ConnectionError("refused")

    started = time.monotonic()
    with pytest.raises(ConnectionError, match="refused"):
        asyncio.run(patiently(connect, what="the broker", retry_on=(ConnectionError,), patience=1))
    assert time.monotonic() - started < 2


def test_an_error_it_is_not_told_to_retry_is_raised_at_once() -> None:
    calls = 0

    async def connect() -> str:
        nonlocal calls
        calls += 1
        raise ValueError("bad URL")

    with pytest.raises(ValueError, match="bad URL"):
        asyncio.run(patiently(connect, what="the broker", retry_on=(ConnectionError,), patience=10))
    assert calls == 1
