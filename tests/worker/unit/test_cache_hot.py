"""Hot tier: LRU within a byte budget, models in use never released under their job."""

from diffleet_worker.cache import HotCache


class Model:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size


def make_cache(budget: int) -> tuple[HotCache[Model], list[str]]:
    released: list[str] = []
    cache: HotCache[Model] = HotCache(
        budget, size_of=lambda m: m.size, release=lambda m: released.append(m.name)
    )
    return cache, released


def resident(cache: HotCache[Model], name: str, size: int) -> None:
    """Loads a model and finishes with it (idle, still resident)."""
    cache.done(cache.put(name, Model(name, size)))


def test_least_recently_used_model_is_released_when_a_new_one_needs_room() -> None:
    cache, released = make_cache(budget=100)
    resident(cache, "a", 40)
    resident(cache, "b", 40)
    slot = cache.take("a")  # a is now the most recently used
    assert slot is not None
    cache.done(slot)

    resident(cache, "c", 40)

    assert released == ["b"]
    assert cache.digests() == ["c", "a"]
    assert cache.used_bytes == 80


def test_take_returns_none_for_a_model_not_resident() -> None:
    cache, _ = make_cache(budget=100)
    assert cache.take("missing") is None


def test_a_model_in_use_is_never_released_by_the_budget() -> None:
    cache, released = make_cache(budget=100)
    busy = cache.put("busy", Model("busy", 60))

    resident(cache, "new", 60)

    assert released == []
    assert set(cache.digests()) == {"busy", "new"}
    assert cache.used_bytes == 120  # over budget: both are needed
    cache.done(busy)
    resident(cache, "third", 30)
    assert released == ["busy"]


def test_make_room_releases_idle_models_before_a_load() -> None:
    cache, released = make_cache(budget=100)
    resident(cache, "a", 50)
    resident(cache, "b", 50)

    assert cache.make_room(50) == ["a"]
    assert released == ["a"]
    assert cache.make_room(10) == []


def test_evicting_a_model_in_use_releases_it_when_its_job_is_done() -> None:
    cache, released = make_cache(budget=100)
    busy = cache.put("busy", Model("busy", 10))

    assert cache.evict("busy") is True
    assert cache.digests() == []
    assert released == []
    cache.done(busy)
    assert released == ["busy"]
    assert cache.evict("busy") is False


def test_evict_all_releases_idle_models_now_and_busy_ones_later() -> None:
    cache, released = make_cache(budget=100)
    resident(cache, "idle", 10)
    busy = cache.put("busy", Model("busy", 10))

    assert sorted(cache.evict_all()) == ["busy", "idle"]
    assert released == ["idle"]
    assert cache.digests() == []
    cache.done(busy)
    assert released == ["idle", "busy"]


def test_loading_a_model_again_releases_the_copy_it_replaces() -> None:
    cache, released = make_cache(budget=100)
    resident(cache, "a", 10)
    resident(cache, "a", 10)
    assert released == ["a"]
    assert cache.digests() == ["a"]


def test_models_the_operator_keeps_hot_go_after_every_other_idle_model() -> None:
    cache, released = make_cache(budget=100)
    resident(cache, "queued-for", 30)  # least recently used, but jobs wait for it
    resident(cache, "old", 30)
    resident(cache, "recent", 30)

    cache.done(cache.put("new", Model("new", 30), keep=["queued-for"]))

    assert released == ["old"]
    assert cache.digests() == ["new", "recent", "queued-for"]
    # Room for 60 more: both idle models not kept go, the newer one too, before it.
    assert cache.make_room(60, keep=["queued-for"]) == ["recent", "new"]
    assert cache.digests() == ["queued-for"]
