"""SeenCache: the message ids a node handled recently, bounded by count and by age.

Ids are kept in insertion order (an OrderedDict, O(1) eviction of the oldest) with no per-id
timestamp: insertion times are grouped in coarse time buckets (`ttl / 32` wide), so memory per id
is one dict entry and expiry pops whole buckets from the front. An id is remembered for at least
`ttl` seconds and at most `ttl` plus one bucket, unless `max_size` newer ids pushed it out first.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, Callable, Hashable


class SeenCache:
    __slots__ = ("max_size", "ttl", "granularity", "_clock", "_ids", "_buckets", "evicted", "expired")

    def __init__(self, max_size: int = 100_000, ttl: float = 120.0, *,
                 clock: Callable[[], float] = time.monotonic, granularity: float | None = None) -> None:
        if max_size < 1 or ttl <= 0:
            raise ValueError("need max_size >= 1 and ttl > 0")
        self.max_size = int(max_size)
        self.ttl = float(ttl)
        self.granularity = float(granularity) if granularity is not None else max(ttl / 32.0, 0.001)
        self._clock = clock
        self._ids: OrderedDict[Hashable, None] = OrderedDict()
        self._buckets: deque[list[Any]] = deque()  # [bucket start time, ids inserted in it], oldest first
        self.evicted = 0  # pushed out by the count bound
        self.expired = 0  # aged out

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: Hashable) -> bool:
        self.prune()
        return key in self._ids

    def add(self, key: Hashable) -> bool:
        """Remember `key`; True if it is new (not seen within the TTL), False for a duplicate."""
        now = self._clock()
        buckets = self._buckets
        if buckets and buckets[0][0] <= now - self.ttl - self.granularity:
            self.prune(now)
        ids = self._ids
        if key in ids:
            return False
        ids[key] = None
        last = buckets[-1] if buckets else None
        if last is not None and now - last[0] < self.granularity:
            last[1] += 1
        else:
            buckets.append([now, 1])
        if len(ids) > self.max_size:
            ids.popitem(last=False)
            self.evicted += 1
            first = buckets[0]
            first[1] -= 1
            if first[1] <= 0:
                buckets.popleft()
        return True

    def prune(self, now: float | None = None) -> int:
        """Forget ids older than the TTL (whole buckets); returns how many went."""
        buckets = self._buckets
        if not buckets:
            return 0
        now = self._clock() if now is None else now
        horizon = now - self.ttl - self.granularity
        gone = 0
        popitem = self._ids.popitem
        while buckets and buckets[0][0] <= horizon:
            _, count = buckets.popleft()
            for _ in range(count):
                popitem(last=False)
            gone += count
        self.expired += gone
        return gone

    def clear(self) -> None:
        self._ids.clear()
        self._buckets.clear()
