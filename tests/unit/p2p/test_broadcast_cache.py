"""The broadcast cache answers grafts from frames it keeps: bounded by bytes as well as by count and age, so a
flood of large broadcasts evicts the oldest instead of growing memory (400 KB notes once added
220 MB to every node)."""
from __future__ import annotations

from p2p.routing.broadcast import MessageCache


def test_the_cache_keeps_its_byte_budget_and_evicts_the_oldest():
    now = [0.0]
    cache = MessageCache(max_size=1000, ttl=30.0, clock=lambda: now[0], max_bytes=1_000_000)
    for n in range(100):
        cache.put(f"m{n}", bytes(100_000), set())
        assert cache.bytes <= 1_000_000
    assert len(cache) == 10
    assert cache.get("m0") is None and cache.get("m99") is not None
    frames = []
    for n in range(90, 100):
        kept = cache.get(f"m{n}")
        assert kept is not None
        frames.append(kept.frame)
    assert cache.bytes == sum(len(frame) for frame in frames)


def test_putting_the_same_message_again_does_not_count_it_twice():
    cache = MessageCache(max_size=10, max_bytes=1000)
    cache.put("a", bytes(400), set())
    cache.put("a", bytes(400), set())
    assert cache.bytes == 400 and len(cache) == 1
