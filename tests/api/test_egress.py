"""The SSRF guard of webhook deliveries: only public addresses are connected to, checked
on the resolved address, and a refused target is not retried."""

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        # IPv6 forms that carry an IPv4 address are judged by the address they carry.
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::169.254.169.254", False),
        ("::8.8.8.8", True),
        ("::ffff:0:127.0.0.1", False),  # SIIT
        ("::ffff:0:192.168.0.1", False),
        ("::ffff:0:8.8.8.8", True),
        ("64:ff9b::127.0.0.1", False),  # NAT64, well-known prefix
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::8.8.8.8", True),
        ("64:ff9b:1::a00:1", False),  # local-use NAT64: refused whatever it carries
        ("64:ff9b:1:808:8:800::", False),
        ("2002:7f00:1::1", False),  # 6to4
        ("2002:a9fe:a9fe::1", False),
        ("2002:c0a8:101::1", False),
        ("2002:808:808::1", True),
        ("2001:0:808:808:0:0:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("2001:0:808:808:0:0:f5ff:fffe", False),  # Teredo, client 10.0.0.1
        ("2001:0:a00:1:0:0:f7f7:f7f7", False),  # Teredo, server 10.0.0.1
        ("2001:0:808:808:0:0:f7f7:f7f7", True),  # Teredo, server and client 8.8.8.8
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


async def deliver(url: str, allow_private: bool) -> Attempt:
    transport = webhook_transport(allow_private)
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        return await post(http, "secret", 1, url, {"type": "job.finished"})


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "169.254.169.254",
        "::1",
        "::ffff:0:7f00:1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
    ],
)
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


@pytest.fixture
def redirector() -> Iterator[tuple[str, WebhookReceiver]]:
    """A loopback server answering every POST with a 307 to a receiver (also loopback)."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", receiver
    server.shutdown()
    server.server_close()
    receiver.close()


def test_a_redirect_is_never_followed(redirector: tuple[str, WebhookReceiver]) -> None:
    url, receiver = redirector

    async def deliver_following() -> Attempt:
        # Even a client told to follow redirects: the sender itself refuses to.
        transport = webhook_transport(allow_private=True)
        async with httpx.AsyncClient(transport=transport, follow_redirects=True) as http:
            return await post(http, "secret", 1, url, {"type": "job.finished"})

    attempt = asyncio.run(deliver_following())
    assert not attempt.delivered
    assert attempt.status == 307
    assert receiver.received == []
