"""The operator's content policies: the job's namespace's diffleet-policy, else the system
namespace's, each read with a GET and remembered for a while; a failed read is not."""

import asyncio
from collections.abc import Mapping

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core.policy import Policy
from diffleet_operator.content_policy import ContentPolicies

SYSTEM = "diffleet-system"


class FakeConfigMaps:
    """diffleet-policy's data per namespace, the GETs made, and an optional failure."""

    def __init__(self, data: dict[str, Mapping[str, str]]) -> None:
        self.data = data
        self.reads: list[str] = []
        self.failing = False

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        assert name == "diffleet-policy"
        self.reads.append(namespace)
        if self.failing:
            raise ApiException(status=503)
        return self.data.get(namespace)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def policies(maps: FakeConfigMaps, clock: Clock) -> ContentPolicies:
    return ContentPolicies(maps.read, SYSTEM, max_age_seconds=10, clock=clock)


def test_the_namespace_policy_replaces_the_platform_one_and_falls_back_to_it() -> None:
    maps = FakeConfigMaps(
        {
            SYSTEM: {"denyList": "red panda\n", "safetyModel": "tiny-safety"},
            "team-a": {"denyList": "# ours\nblue whale"},
        }
    )
    cache = policies(maps, Clock())

    async def both() -> tuple[Policy, Policy]:
        return await cache.of("team-a"), await cache.of("team-b")

    own, fallback = asyncio.run(both())
    assert own == Policy(("blue whale",), None, "team-a/diffleet-policy")
    assert own.denied("a RED PANDA") is None  # not merged with the platform's
    assert fallback.source == "diffleet-system/diffleet-policy"
    assert fallback.denied("A red  Panda.") == "red panda"
    assert fallback.safety_model == "tiny-safety"


def test_no_configmap_anywhere_is_no_policy() -> None:
    cache = policies(FakeConfigMaps({}), Clock())
    assert asyncio.run(cache.of("team-a")) == Policy()


def test_reads_are_remembered_until_they_are_too_old() -> None:
    maps = FakeConfigMaps({"team-a": {"denyList": "cat"}})
    clock = Clock()
    cache = policies(maps, clock)

    async def ask() -> str | None:
        return (await cache.of("team-a")).denied("a cat")

    assert [asyncio.run(ask()) for _ in range(3)] == ["cat"] * 3
    assert maps.reads == ["team-a"]
    maps.data["team-a"] = {"denyList": "dog"}
    clock.now = 10.5
    assert asyncio.run(ask()) is None  # the edited ConfigMap applies once re-read
    assert maps.reads == ["team-a", "team-a"]


def test_a_failed_read_raises_and_is_not_remembered() -> None:
    maps = FakeConfigMaps({"team-a": {"denyList": "cat"}})
    cache = policies(maps, Clock())
    maps.failing = True
    with pytest.raises(ApiException):
        asyncio.run(cache.of("team-a"))
    maps.failing = False
    assert asyncio.run(cache.of("team-a")).denied("cat") == "cat"
    assert maps.reads == ["team-a", "team-a"]


def test_a_dispatch_takes_the_policy_as_last_read_without_a_request() -> None:
    maps = FakeConfigMaps({SYSTEM: {"safetyModel": "tiny-safety"}})
    clock = Clock()
    cache = policies(maps, clock)
    assert cache.last_read("team-a") is None  # never read: the dispatch reads it
    asyncio.run(cache.of("team-a"))
    clock.now = 3600.0  # however old
    reads = list(maps.reads)
    last = cache.last_read("team-a")
    assert last is not None
    assert last.safety_model == "tiny-safety"
    assert maps.reads == reads
