"""The SSRF guard of webhook deliveries: only public addresses are connected to, checked
on the resolved address, and a refused target is not retried."""

import asyncio
import ipaddress

import httpcore
import httpx
import pytest

from diffleet_api.egress import PublicOnlyBackend, is_public, webhook_transport
from diffleet_api.webhooks import Attempt, post
from tests.api.support import WebhookReceiver


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address classified, not bound
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


async def deliver(url: str, allow_private: bool) -> Attempt:
    transport = webhook_transport(allow_private)
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        return await post(http, "secret", 1, url, {"type": "job.finished"})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "::1"])
def test_the_backend_refuses_internal_targets_before_connecting(host: str) -> None:
    with pytest.raises(httpcore.ConnectError, match="not a public address"):
        asyncio.run(PublicOnlyBackend().connect_tcp(host, 80, timeout=5))


def test_a_webhook_to_loopback_is_refused_once_and_never_sent() -> None:
    receiver = WebhookReceiver()
    try:
        attempt = asyncio.run(deliver(receiver.url, allow_private=False))
        assert not attempt.delivered
        assert attempt.final
        assert attempt.error is not None
        assert "not a public address" in attempt.error
        assert receiver.received == []
    finally:
        receiver.close()


def test_private_targets_can_be_allowed_for_local_development() -> None:
    receiver = WebhookReceiver()
    try:
        attempt = asyncio.run(deliver(receiver.url, allow_private=True))
        assert attempt.delivered
        assert len(receiver.received) == 1
    finally:
        receiver.close()
