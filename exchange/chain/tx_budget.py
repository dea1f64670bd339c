"""How many transactions each neighbour may hand a validator per second, checked before any signature is.

Verifying a signature is the costly part of admitting a transaction, and a fresh account costs nothing,
so a peer's excess is dropped unread (counted, never penalised: a follower relaying a busy API is
bursty, not hostile) once its bucket is empty. Validators relaying to each other carry everyone's
transactions and are not metered here; their own intake is. The map of senders is bounded: the least
recently heard is forgotten first (it starts again with a full bucket, no more).
"""
from __future__ import annotations

from collections import OrderedDict


class TxBudget:
    def __init__(self, rate: float = 500.0, burst: float = 2_000.0, max_senders: int = 4_096) -> None:
        self.rate, self.burst, self.max_senders = rate, burst, max_senders
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()    # sender -> (tokens, at)
        self.dropped: dict[str, int] = {}

    def take(self, sender: str, now: float) -> bool:
        """One transaction from `sender` at `now`: True when its budget allows it."""
        tokens, at = self._buckets.pop(sender, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[sender] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)
        if not allowed:
            self.dropped[sender] = self.dropped.get(sender, 0) + 1
            if len(self.dropped) > self.max_senders:
                del self.dropped[next(iter(self.dropped))]
        return allowed

    def view(self, top: int = 5) -> dict[str, object]:
        """For /status: the senders whose excess was dropped most (bounded)."""
        worst = sorted(self.dropped.items(), key=lambda item: item[1], reverse=True)[:top]
        return {"rate": self.rate, "burst": self.burst, "dropped_total": sum(self.dropped.values()),
                "throttled": [{"peer": peer, "dropped": count} for peer, count in worst]}
