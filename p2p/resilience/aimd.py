"""AIMD concurrency limit for one peer: additive increase while answers are quick, multiplicative
decrease on timeouts or overload (TCP congestion control applied to in-flight requests)."""
from __future__ import annotations

import math


class AIMDLimit:
    """`limit` grows by `increase / limit` per fast success (about +`increase` per limit's worth of
    answers, i.e. per round trip) and is multiplied by `decrease` on a timeout or overload, at most
    once per `cooldown` seconds so one burst of timeouts counts as one congestion signal.
    """

    __slots__ = ("limit", "allowed", "min_limit", "max_limit", "increase", "decrease", "target_latency",
                 "cooldown", "_last_decrease")

    def __init__(self, initial: float = 4.0, *, min_limit: float = 1.0, max_limit: float = 256.0,
                 increase: float = 1.0, decrease: float = 0.5, target_latency: float = 0.25,
                 cooldown: float = 0.0) -> None:
        if not (0 < min_limit <= initial <= max_limit):
            raise ValueError("need 0 < min_limit <= initial <= max_limit")
        if not (0 < decrease < 1) or increase <= 0:
            raise ValueError("need 0 < decrease < 1 and increase > 0")
        self.limit = float(initial)
        self.allowed = max(1, int(self.limit))   # whole number of requests that may be in flight
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.increase = float(increase)
        self.decrease = float(decrease)
        self.target_latency = float(target_latency)
        self.cooldown = float(cooldown)
        self._last_decrease = -math.inf

    def can_send(self, outstanding: int) -> bool:
        return outstanding < self.allowed

    def on_success(self, latency: float) -> None:
        # Once per answer: plain comparisons instead of min() / max() calls.
        if latency <= self.target_latency:
            limit = self.limit + self.increase / self.limit
            if limit > self.max_limit:
                limit = self.max_limit
            self.limit = limit
            allowed = int(limit)
            self.allowed = allowed if allowed > 1 else 1

    def on_overload(self, now: float = 0.0) -> bool:
        """Timeout or explicit rejection: cut the limit. Returns False if ignored (cooldown)."""
        if now - self._last_decrease < self.cooldown:
            return False
        self._last_decrease = now
        self.limit = max(self.min_limit, self.limit * self.decrease)
        self.allowed = max(1, int(self.limit))
        return True
