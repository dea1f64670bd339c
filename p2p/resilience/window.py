"""Sliding time-window event counters in O(1) memory: a ring of fixed-width buckets with running totals."""
from __future__ import annotations

import math
from typing import Sequence

OUTCOMES: tuple[str, ...] = ("success", "error", "timeout", "rejected")


class WindowCounter:
    """Counts events of a few named kinds over the last `span` seconds, at `span / buckets` resolution.

    Memory is `len(kinds) * buckets` integers whatever the event rate. Time is passed in (`now`),
    never read, so simulations and tests drive it. Time that goes backwards is treated as `now`
    equal to the latest time seen.

    Hot path: while `now` stays inside the newest bucket (before `_until`), `add` and `count` are one
    comparison and two list increments; buckets are only rotated when time crosses a bucket edge.
    """

    __slots__ = ("kinds", "span", "width", "_n", "_index", "_ring", "_totals", "_head", "_cur", "_until")

    def __init__(self, span: float = 10.0, buckets: int = 10, kinds: Sequence[str] = OUTCOMES) -> None:
        if span <= 0 or buckets < 1:
            raise ValueError("span must be > 0 and buckets >= 1")
        self.kinds = tuple(kinds)
        self.span = float(span)
        self.width = self.span / buckets
        self._n = buckets
        self._index = {k: i for i, k in enumerate(self.kinds)}
        self._ring = [[0] * len(self.kinds) for _ in range(buckets)]
        self._totals = [0] * len(self.kinds)
        self._head: int | None = None  # absolute bucket number of the newest bucket
        self._cur = self._ring[0]      # the newest bucket
        self._until = -math.inf        # start of the bucket after the newest: `now` below it needs no rotation

    def _advance(self, now: float) -> None:
        """Move the head to the bucket holding `now`, clearing buckets that fell out of the window."""
        slot = math.floor(now / self.width)
        head = self._head
        if head is None:
            head = slot
        elif slot > head:
            n = self._n
            ring = self._ring
            totals = self._totals
            for s in range(head + 1, head + 1 + min(slot - head, n)):
                bucket = ring[s % n]
                for i, v in enumerate(bucket):
                    if v:
                        totals[i] -= v
                        bucket[i] = 0
            head = slot
        else:
            # Same bucket (a float edge case) or time went backwards: count in the newest bucket.
            self._until = max(self._until, now)
            return
        self._head = head
        self._cur = self._ring[head % self._n]
        self._until = (head + 1) * self.width

    def add(self, kind: str, now: float, n: int = 1) -> None:
        if now >= self._until:
            self._advance(now)
        i = self._index[kind]
        self._cur[i] += n
        self._totals[i] += n

    def totals(self, now: float) -> list[int]:
        """The live per-kind totals, in `kinds` order (read them, do not change them): hot callers
        read several counts with one call."""
        if now >= self._until:
            self._advance(now)
        return self._totals

    def bump(self, index: int, now: float) -> list[int]:
        """`add(kinds[index], now)` without the name lookup; returns the live totals (read only), so
        a hot caller counts and reads in one call."""
        if now >= self._until:
            self._advance(now)
        self._cur[index] += 1
        totals = self._totals
        totals[index] += 1
        return totals

    def recent_total(self, seconds: float, now: float) -> int:
        """Events of every kind in the newest `seconds` (rounded to whole buckets, at least one)."""
        if now >= self._until:
            self._advance(now)
        if self._head is None:
            return 0
        n = self._n
        newest = min(n, max(1, round(seconds / self.width)))
        ring, head = self._ring, self._head
        return sum(sum(ring[(head - i) % n]) for i in range(newest))

    def count(self, kind: str, now: float) -> int:
        if now >= self._until:
            self._advance(now)
        return self._totals[self._index[kind]]

    def total(self, now: float) -> int:
        if now >= self._until:
            self._advance(now)
        return sum(self._totals)

    def counts(self, now: float) -> dict[str, int]:
        if now >= self._until:
            self._advance(now)
        return dict(zip(self.kinds, self._totals))

    def rate(self, kind: str, now: float, min_volume: int = 1) -> float:
        """Fraction of events in the window that are `kind` (0 while fewer than `min_volume` events)."""
        if now >= self._until:
            self._advance(now)
        total = sum(self._totals)
        if total < max(1, min_volume):
            return 0.0
        return self._totals[self._index[kind]] / total

    def clear(self) -> None:
        for bucket in self._ring:
            for i in range(len(bucket)):
                bucket[i] = 0
        self._totals = [0] * len(self.kinds)
