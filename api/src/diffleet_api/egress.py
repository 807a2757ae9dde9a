"""Outbound HTTP to addresses a tenant chose (webhooks) reaches public addresses only.

The check runs when a connection is opened, on the addresses the host name resolves to,
and the connection goes to one of those checked addresses: a DNS answer that changes
between a check and a connect (rebinding) cannot reach an internal service. Loopback,
private, link-local (cloud metadata at 169.254.169.254), shared, reserved, multicast and
unspecified addresses are refused. An IPv6 address that carries an IPv4 address (mapped,
compatible, SIIT, NAT64, 6to4, Teredo) is judged by the IPv4 address it carries, since a
host stack, translator or relay delivers it there; local-use NAT64 (64:ff9b:1::/48) is
refused outright (where its IPv4 address sits depends on the local translator). TLS still
verifies the URL's host name. Local development and tests may allow them
(`DIFFLEET_API_WEBHOOK_ALLOW_PRIVATE_TARGETS`).
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PrivateTargetError(httpcore.ConnectError):
    """The target resolves to an address that is not public."""


IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
LAST_32_BITS = (IPV4_COMPATIBLE, SIIT, NAT64)
"""Networks whose addresses carry an IPv4 address in their last 32 bits."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address carries (a Teredo address carries its server's
    and its client's), or None when it carries none."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if any(address in network for network in LAST_32_BITS):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return None


def is_public(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address in LOCAL_NAT64:
            return False
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return all(is_public(inner) for inner in embedded)
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int, within_seconds: float | None) -> list[IpAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), within_seconds
        )
    except (OSError, TimeoutError) as error:
        raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
    found: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to public addresses."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port, timeout)
        private = [address for address in addresses if not is_public(address)]
        if private or not addresses:
            raise PrivateTargetError(
                f"{host} resolves to {private[0] if private else 'nothing'}, which is not a"
                " public address: refused"
            )
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as error:
                failure = error
        assert failure is not None
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, its connection pool built on `PublicOnlyBackend` (httpx has no
    argument for a network backend, so the pool it made is replaced). Proxies from the
    environment are ignored: a proxy would connect on our behalf, unchecked."""

    def __init__(self) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=PublicOnlyBackend(),
        )


def webhook_transport(allow_private: bool) -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(trust_env=False) if allow_private else PublicOnlyTransport()


def refused_target(error: BaseException) -> bool:
    """Whether an httpx error is (caused by) a refusal of a non-public target."""
    return isinstance(error, PrivateTargetError) or isinstance(error.__cause__, PrivateTargetError)
