"""Calls to S3 (boto3 is blocking: each runs in a thread, under the client's timeouts);
S3's failures become 503 problem responses naming what was being done."""

import asyncio
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from diffleet_api.errors import UnavailableError


async def s3_call(what: str, method: Callable[..., Any], **arguments: Any) -> Any:
    try:
        return await asyncio.to_thread(method, **arguments)
    except (BotoCoreError, ClientError) as error:
        raise UnavailableError(f"S3 failed to {what}: {error}") from error
