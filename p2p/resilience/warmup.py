"""Warm-up: a just-started node (or a just-recovered peer) starts at a low rate and reaches its full
rate linearly over a warm-up period, so a restart never storms its neighbours."""
from __future__ import annotations

from p2p.resilience.token_bucket import TokenBucket


class Warmup:
    """fraction(now) goes from `start_fraction` at `started_at` to 1.0 at `started_at + period`."""

    __slots__ = ("full_rate", "period", "start_fraction", "started_at")

    def __init__(self, full_rate: float, period: float = 30.0, *, start_fraction: float = 0.1,
                 started_at: float = 0.0) -> None:
        if full_rate < 0 or period < 0 or not (0 < start_fraction <= 1):
            raise ValueError("need full_rate >= 0, period >= 0, 0 < start_fraction <= 1")
        self.full_rate = float(full_rate)
        self.period = float(period)
        self.start_fraction = float(start_fraction)
        self.started_at = float(started_at)

    def fraction(self, now: float) -> float:
        if self.period <= 0:
            return 1.0
        progress = (now - self.started_at) / self.period
        if progress >= 1.0:
            return 1.0
        return self.start_fraction + (1.0 - self.start_fraction) * max(0.0, progress)

    def rate(self, now: float) -> float:
        return self.full_rate * self.fraction(now)

    def done(self, now: float) -> bool:
        return now - self.started_at >= self.period

    def restart(self, now: float) -> None:
        self.started_at = float(now)

    def apply(self, bucket: TokenBucket, now: float) -> None:
        """Set a token bucket's refill rate to the warm-up rate at `now` (call it periodically)."""
        bucket.set_rate(self.rate(now))
