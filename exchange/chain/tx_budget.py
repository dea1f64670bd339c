"""How many transactions each neighbour may hand a validator per second, checked before any signature is.

Verifying a signature is the costly part of admitting a transaction, and a fresh account costs nothing,
so a peer's excess is dropped unread (counted, never penalised: a follower relaying a busy API is
bursty, not hostile) once its bucket is empty. Validators relaying to each other carry everyone's
transactions and are not metered here; their own intake is. The map of senders is bounded: the least
recently heard is forgotten first (it starts again with a full bucket, no more).

A neighbour whose bucket is empty is also not read from until it has refilled a tenth of a second's
worth (`hold_for`): decoding what would be dropped costs the validator as much as the rest of its work, so
past its budget a flood waits in the sender's TCP window instead of in our event loop, and is read again
in small steps at the budget's pace: a longer hold would end in a burst of that many transactions at
once, at every validator together.
"""
from __future__ import annotations

from collections import OrderedDict


HOLD_REFILL_SECONDS = 0.1     # a held neighbour is read again once this much of its rate has refilled
HOLD_MIN_SECONDS = 0.05       # ... and never sooner: a hold per frame would cost more than it saves


class TxBudget:
    def __init__(self, rate: float = 500.0, burst: float = 2_000.0, max_senders: int = 4_096) -> None:
        self.rate, self.burst, self.max_senders = rate, burst, max_senders
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()    # sender -> (tokens, at)
        self.dropped: dict[str, int] = {}
        self._held_until: OrderedDict[str, float] = OrderedDict()
        self.holds = 0

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

    def hold_for(self, sender: str, now: float) -> float | None:
        """After `take` refused `sender`: seconds to read nothing from it, until its bucket holds a tenth of a
        second's worth again (so holds stay short: the link's heartbeats wait too); None while an earlier hold
        still covers `now` (what was handed over before it began is still being dropped)."""
        if self._held_until.get(sender, 0.0) > now:
            return None
        tokens = self._buckets[sender][0] if sender in self._buckets else 0.0
        refill = min(self.burst, max(1.0, self.rate * HOLD_REFILL_SECONDS))     # at least one transaction's worth
        seconds = max(HOLD_MIN_SECONDS, (refill - tokens) / self.rate)
        self._held_until.pop(sender, None)
        self._held_until[sender] = now + seconds
        if len(self._held_until) > self.max_senders:
            self._held_until.popitem(last=False)
        self.holds += 1
        return seconds

    def view(self, top: int = 5) -> dict[str, object]:
        """For /status: the senders whose excess was dropped most (bounded)."""
        worst = sorted(self.dropped.items(), key=lambda item: item[1], reverse=True)[:top]
        return {"rate": self.rate, "burst": self.burst, "dropped_total": sum(self.dropped.values()), "holds": self.holds,
                "throttled": [{"peer": peer, "dropped": count} for peer, count in worst]}
