"""A share of the event loop for work any reader can make the node redo, whoever asks.

The per-address and per-network request rates (`rate.py`) bound how often a public route is asked, not what
each answer costs; a book's digest encodes every resting order, once per height the book changed at, so on a
busy chain with a big book a handful of readers could keep the loop encoding it. After such work took t
seconds, more is allowed only t / share seconds later, so it takes at most `share` of the loop; a reader
asking meanwhile is answered without it and told so.
"""
from __future__ import annotations

import time
from typing import Callable

DIGEST_SHARE = 0.05         # of the event loop's time, for book digests


class CostBudget:
    def __init__(self, share: float = DIGEST_SHARE, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.clock = clock
        self._next = 0.0
        self.deferred = 0

    def allows(self) -> bool:
        if self.clock() >= self._next:
            return True
        self.deferred += 1
        return False

    def spent(self, seconds: float) -> None:
        self._next = self.clock() + seconds / self.share
