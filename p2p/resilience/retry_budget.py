"""Retry budget: retries may add at most ~`ratio` of the request volume plus a small floor per second."""
from __future__ import annotations

import time
from typing import Callable

from p2p.resilience.token_bucket import TokenBucket

_ONE = 1.0 - 1e-9  # one retry, tolerant of float sums such as 10 * 0.2


class RetryBudget:
    """Finagle-style budget. Each original request deposits `ratio` tokens, the floor refills
    `min_per_second` tokens/s, each retry spends one; the balance is capped at `max_balance` so a
    quiet period cannot save up a retry storm.
    """

    __slots__ = ("ratio", "_bucket", "retries", "denied")

    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0, *, max_balance: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must be >= 0")
        self.ratio = float(ratio)
        cap = max_balance if max_balance is not None else max(1.0, min_per_second)
        self._bucket = TokenBucket(min_per_second, cap, clock=clock, initial=cap)
        self.retries = 0
        self.denied = 0

    def record_request(self) -> None:
        """An original (non-retry) request was sent."""
        if self.ratio:
            self._bucket.put(self.ratio)

    def can_retry(self) -> bool:
        """Whether a retry is affordable now (does not spend)."""
        return self._bucket.tokens >= _ONE

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        if self._bucket.try_take(_ONE):
            self.retries += 1
            return True
        self.denied += 1
        return False

    @property
    def balance(self) -> float:
        return self._bucket.tokens
