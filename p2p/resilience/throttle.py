"""Client-side adaptive throttling (Google SRE book, "Handling Overload"): shed load locally when
the backend keeps rejecting, with probability max(0, (requests - K * accepts) / (requests + 1)).

Accepts are not counted one by one: every request that is neither in flight, nor refused here,
nor reported failed was accepted, so accepts = requests - in flight - local rejects - failures.
The answer path (nearly every request) then costs the throttle nothing; only failures are
reported. A call its caller abandoned counts as accepted: that is not the backend's doing.
"""
from __future__ import annotations

import random

from p2p.resilience.window import WindowCounter

_REQUESTS, _REFUSED = 0, 1   # indexes of the window's kinds: attempts, and local rejects + failures


class AdaptiveThrottle:
    """Counts requests and refusals over a sliding window (`span` seconds). `K` = 2 lets the backend
    see up to twice what it accepts, so it still has work to reject and its recovery is noticed quickly.
    """

    def __init__(self, k: float = 2.0, span: float = 60.0, buckets: int = 30, *,
                 rng: random.Random | None = None) -> None:
        if k < 1.0:
            raise ValueError("k must be >= 1")
        self.k = float(k)
        self._rng = rng or random.Random()
        self._window = WindowCounter(span, buckets, ("requests", "refused"))
        self.local_rejects = 0

    def _probability(self, requests: int, refused: int, in_flight: int) -> float:
        """`in_flight`: requests still awaiting an answer, neither accepted nor refused yet (without
        this, a burst of concurrent requests at start, nothing answered *yet*, would be shed)."""
        live = requests - in_flight
        accepts = live - refused
        if accepts < 0:
            accepts = 0
        return max(0.0, (live - self.k * accepts) / (requests + 1))

    def reject_probability(self, now: float, in_flight: int = 0) -> float:
        requests, refused = self._window.totals(now)
        return self._probability(requests, refused, in_flight)

    def should_reject(self, now: float, in_flight: int = 0) -> bool:
        """Draw whether to reject this request locally. Every call counts as a request (the SRE
        formula counts what the application attempted, including locally rejected requests)."""
        totals = self._window.bump(_REQUESTS, now)
        refused = totals[_REFUSED]
        if not refused:
            return False                              # nothing refused in the window: p is 0
        p = self._probability(totals[_REQUESTS] - 1, refused, in_flight)
        if p > 0.0 and self._rng.random() < p:
            self.local_rejects += 1
            self._window.bump(_REFUSED, now)
            return True
        return False

    def record_failure(self, now: float) -> None:
        """A request that `should_reject` let through ended without an accepted answer."""
        self._window.bump(_REFUSED, now)
