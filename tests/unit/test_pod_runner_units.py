"""The pod runner's pod addresses and image entrypoints (hack/pod_runner)."""

from kubernetes_asyncio import client

from hack.pod_runner.addresses import PodAddresses, is_pod_address
from hack.pod_runner.workloads import container_argv


def test_each_pod_gets_its_own_address_off_the_hosts_range() -> None:
    addresses = PodAddresses()
    first, second = addresses.allocate("a"), addresses.allocate("b")
    assert first != second
    assert first.startswith("127.0.")
    assert not first.startswith("127.0.0.")
    assert addresses.allocate("a") == first  # a restarted container keeps it


def test_an_adopted_pod_keeps_its_address_unless_taken() -> None:
    addresses = PodAddresses()
    assert addresses.allocate("a", previous="127.0.9.9") == "127.0.9.9"
    assert addresses.allocate("b", previous="127.0.9.9") != "127.0.9.9"
    assert addresses.allocate("c", previous="127.0.0.1") != "127.0.0.1"


def test_a_released_address_is_free_again() -> None:
    addresses = PodAddresses()
    taken = addresses.allocate("a")
    addresses.release("a")
    assert addresses.allocate("b", previous=taken) == taken


def test_pod_addresses_exclude_network_and_broadcast_like_hosts() -> None:
    assert not is_pod_address("127.0.5.0")
    assert not is_pod_address("127.0.5.255")
    assert not is_pod_address("10.0.0.1")
    assert not is_pod_address(None)


def test_a_container_without_command_runs_its_images_entrypoint() -> None:
    def container(image: str, command: list[str] | None = None) -> client.V1Container:
        return client.V1Container(name="c", image=image, command=command, args=["--x"])

    assert container_argv(container("ghcr.io/diffleet/diffleet-api:0.1.0")) == [
        "diffleet-api",
        "--x",
    ]
    assert container_argv(container("ghcr.io/diffleet/diffleet-gpu-worker@sha256:ab"))[0] == (
        "diffleet-worker"
    )
    assert container_argv(container("x/diffleet-api:1", ["diffleet-admin", "drain"])) == [
        "diffleet-admin",
        "drain",
        "--x",
    ]
    assert container_argv(container("busybox:1")) == []
