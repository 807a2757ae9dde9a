"""Pod IPs on this host: each pod the runner runs gets its own loopback address.

Every 127.0.0.0/8 address reaches the loopback interface on Linux, so servers of several
pods can bind the same port, each on its pod's address, as they would in a cluster.
127.0.0.0/24 (127.0.0.1 among them) stays the host's: pods get 127.0.1.1 to 127.0.255.254.
"""

import ipaddress

FIRST = int(ipaddress.IPv4Address("127.0.1.1"))
LAST = int(ipaddress.IPv4Address("127.0.255.254"))


def is_pod_address(address: str | None) -> bool:
    """An address this allocator hands out (a pod IP an earlier runner gave)."""
    try:
        value = int(ipaddress.IPv4Address(address or ""))
    except ValueError:
        return False
    return FIRST <= value <= LAST and value & 0xFF not in (0, 255)


class PodAddresses:
    """Allocates one address per pod (by uid); a released address is reused last."""

    def __init__(self) -> None:
        self._by_pod: dict[str, str] = {}
        self._next = FIRST

    def allocate(self, uid: str, previous: str | None = None) -> str:
        """The pod's address: its previous one (a pod adopted after a restart of the
        runner keeps its IP) when still free, else the next free one."""
        if uid in self._by_pod:
            return self._by_pod[uid]
        taken = set(self._by_pod.values())
        if is_pod_address(previous) and previous not in taken:
            self._by_pod[uid] = str(previous)
            return str(previous)
        for _ in range(LAST - FIRST + 1):
            candidate = str(ipaddress.IPv4Address(self._next))
            self._next = self._next + 1 if self._next < LAST else FIRST
            if is_pod_address(candidate) and candidate not in taken:
                self._by_pod[uid] = candidate
                return candidate
        raise RuntimeError("no free pod address left in 127.0.1.1-127.0.255.254")

    def release(self, uid: str) -> None:
        self._by_pod.pop(uid, None)
