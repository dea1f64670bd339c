"""Exponential backoff with full jitter (AWS architecture blog): spreads retries so peers never sync up."""
from __future__ import annotations

import random


class Backoff:
    """Delay for attempt n is uniform(0, min(cap, base * factor**n)); `reset()` after a success."""

    __slots__ = ("base", "cap", "factor", "attempts", "_rng")

    def __init__(self, base: float = 0.5, cap: float = 30.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.cap, self.base * (self.factor ** self.attempts))

    def next_delay(self) -> float:
        """Delay before the next attempt; grows the ceiling for the one after."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempts = min(self.attempts + 1, 64)
        return delay

    def reset(self) -> None:
        self.attempts = 0

    def delay_for(self, attempt: int) -> float:
        """Full-jitter delay for a given attempt number (0-based) without touching `attempts`."""
        ceiling = min(self.cap, self.base * (self.factor ** min(max(attempt, 0), 64)))
        return self._rng.uniform(0.0, ceiling)
