"""SeenCache: duplicates detected, count and age bounds hold, memory stays bounded after 1,000,000 ids."""
from __future__ import annotations

import tracemalloc

from p2p.seen_cache import SeenCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_add_reports_new_and_duplicate() -> None:
    cache = SeenCache(10, 60.0)
    assert cache.add("a") is True
    assert cache.add("a") is False
    assert "a" in cache and "b" not in cache
    assert len(cache) == 1


def test_count_bound_evicts_oldest_first() -> None:
    cache = SeenCache(3, 60.0)
    for key in "abcd":
        cache.add(key)
    assert len(cache) == 3
    assert "a" not in cache and "d" in cache
    assert cache.evicted == 1
    assert cache.add("a") is True  # forgotten, so new again


def test_age_bound_forgets_after_ttl_and_not_before() -> None:
    clock = Clock()
    cache = SeenCache(1000, 10.0, clock=clock)
    cache.add("old")
    clock.now += 9.9
    assert "old" in cache
    cache.add("newer")
    clock.now += 0.1 + cache.granularity + 0.001  # "old" is past ttl (+ one bucket)
    assert "old" not in cache
    assert "newer" in cache
    clock.now += 10.0 + cache.granularity
    assert "newer" not in cache
    assert len(cache) == 0 and cache.expired == 2


def test_one_million_unique_ids_stay_within_bounds() -> None:
    max_size = 50_000
    clock = Clock()
    cache = SeenCache(max_size, 120.0, clock=clock)
    add = cache.add
    for i in range(900_000):
        clock.now += 0.0001  # 100 s of traffic at 10k ids/s: the count bound governs
        assert add(i.to_bytes(16, "big"))
        if i % 100_000 == 0:
            assert len(cache) <= max_size
    # Trace the last 100k: in steady state what is allocated is what is evicted, so the traced
    # peak is at most the live entries, not the ids ever seen.
    tracemalloc.start()
    try:
        for i in range(900_000, 1_000_000):
            clock.now += 0.0001
            assert add(i.to_bytes(16, "big"))
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cache) == max_size
    assert cache.evicted == 1_000_000 - max_size
    assert len(cache._buckets) <= 40  # ttl / granularity + 1, whatever the id count
    # 50k live ids of 16 bytes (~49 B each) plus ordered-dict slots; nothing grows with the 1M total.
    assert peak < 12 * 1024 * 1024, peak
    # age bound: after a quiet TTL everything is gone
    clock.now += 120.0 + cache.granularity
    cache.prune()
    assert len(cache) == 0
