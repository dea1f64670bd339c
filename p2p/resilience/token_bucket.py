"""Token bucket: one pacing primitive for dials, queue flushes, retries and inbound limits."""
from __future__ import annotations

import time
from typing import Callable


class TokenBucket:
    """Refills continuously at `rate` tokens/s up to `burst`; callers take tokens or learn the wait.

    The clock is injectable so simulations and tests run without real time.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "_clock")

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic,
                 initial: float | None = None) -> None:
        if rate < 0 or burst <= 0:
            raise ValueError("rate must be >= 0 and burst > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst if initial is None else min(float(initial), self.burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._stamp = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def try_take(self, n: float = 1.0) -> bool:
        """Take `n` tokens if available now; never blocks."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def put(self, n: float) -> None:
        """Deposit `n` tokens (capped at `burst`): for budgets earned per event rather than per second."""
        if self._tokens >= self.burst:
            # Already full (a retry budget's steady state): nothing to add, and no clock read. The
            # stale stamp is harmless: refilling a full bucket leaves it full, and anything that takes
            # tokens refills (and so re-stamps) first.
            return
        self._refill()
        self._tokens = min(self.burst, self._tokens + n)

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until `n` tokens will be available (0 if now)."""
        self._refill()
        missing = n - self._tokens
        if missing <= 0:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return missing / self.rate

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Change the refill rate (warm-up ramps and AIMD use this) without losing accrued tokens."""
        self._refill()
        self.rate = float(rate)
        if burst is not None:
            self.burst = float(burst)
            self._tokens = min(self._tokens, self.burst)
