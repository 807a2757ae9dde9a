"""Wait for state with a deadline instead of sleeping."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceededError(AssertionError):
    """The awaited state did not come in time; the message says what was last seen."""


def eventually(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str,
) -> T:
    """Calls `probe` until it returns something other than None or False, and returns it.

    Exceptions from the probe count as "not yet" until the deadline; the last one is
    reported then, so a failure says why, not only that time ran out.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
        except Exception as error:  # noqa: BLE001 - any failure of a probe means "not yet"
            last = error
        else:
            if result is not None and result is not False:
                return result
            last = result
        if time.monotonic() >= deadline:
            message = f"{what}: not reached within {timeout:.0f}s (last: {last!r})"
            raise DeadlineExceededError(message)
        time.sleep(interval)
