"""Client-side adaptive throttling (Google SRE book, "Handling Overload"): shed load locally when
the backend keeps rejecting, with probability max(0, (requests - K * accepts) / (requests + 1))."""
from __future__ import annotations

import random

from p2p.resilience.window import WindowCounter


_REQUESTS, _ACCEPTS = 0, 1   # indexes of the window's two kinds


class AdaptiveThrottle:
    """Counts requests and accepts over a sliding window (`span` seconds). `K` = 2 lets the backend see
    up to twice what it accepts, so it still has work to reject and its recovery is noticed quickly.
    """

    def __init__(self, k: float = 2.0, span: float = 60.0, buckets: int = 30, *,
                 rng: random.Random | None = None) -> None:
        if k < 1.0:
            raise ValueError("k must be >= 1")
        self.k = float(k)
        self._rng = rng or random.Random()
        self._window = WindowCounter(span, buckets, ("requests", "accepts"))
        self.local_rejects = 0

    def reject_probability(self, now: float, in_flight: int = 0) -> float:
        """`in_flight`: requests still awaiting an answer, which do not count as refused (without
        this, a burst of concurrent requests at start, nothing accepted *yet*, would be shed)."""
        requests, accepts = self._window.totals(now)
        return max(0.0, (requests - in_flight - self.k * accepts) / (requests + 1))

    def should_reject(self, now: float, in_flight: int = 0) -> bool:
        """Draw whether to reject this request locally. Every call counts as a request (the SRE
        formula counts what the application attempted, including locally rejected requests)."""
        totals = self._window.bump(_REQUESTS, now)
        requests = totals[_REQUESTS] - 1           # before this one
        excess = requests - in_flight - self.k * totals[_ACCEPTS]
        if excess > 0.0 and self._rng.random() * (requests + 1) < excess:
            self.local_rejects += 1
            return True
        return False

    def record_accept(self, now: float) -> None:
        """The backend accepted (answered) a request that `should_reject` let through."""
        self._window.bump(_ACCEPTS, now)
