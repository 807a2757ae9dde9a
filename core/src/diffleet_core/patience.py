"""Waiting out a dependency's outage: jittered exponential backoff within a deadline.

A process (re)started while RabbitMQ, PostgreSQL or the API server is away comes up once
it is back, instead of exiting and waiting for someone to restart it.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 8.0


async def patiently(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    patience: float,
) -> T:
    """`attempt()`'s result, retried while it raises one of `retry_on`, pausing with
    jittered backoff (0.5 s doubling to 8 s) for up to `patience` seconds in all; the
    last error is raised past that."""
    deadline = time.monotonic() + patience
    backoff = FIRST_PAUSE_SECONDS
    while True:
        try:
            return await attempt()
        except retry_on as error:
            pause = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not a secret
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("%s unreachable: %r; retrying in %.1fs", what, error, pause)
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, MAX_PAUSE_SECONDS)
