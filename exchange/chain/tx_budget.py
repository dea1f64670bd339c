"""How many transactions each neighbour may hand a validator per second, checked before any signature is.

Verifying a signature is the costly part of admitting a transaction, and a fresh account costs nothing,
so a peer's excess is dropped unread (counted, never penalised: a follower relaying a busy API is
bursty, not hostile) once its bucket is empty. Validators relaying to each other carry everyone's
transactions and are not metered here; their own intake is. The map of senders is bounded: the least
recently heard is forgotten first (it starts again with a full bucket, no more).

A validator that admitted a neighbour's transaction hands it on naming the neighbour (`intake.on_relayed_tx`),
and every other validator `charge`s it to the same neighbour's bucket, into debt if need be: the budget is the
neighbour's across the validator set, not once per validator it can reach.

A neighbour whose bucket is empty is also not read from until it has refilled a second's worth
(`hold_for`): decoding what would be dropped costs the validator as much as the rest of its work, so
past its budget a flood waits in the sender's TCP window instead of in our event loop.
"""
from __future__ import annotations

from collections import OrderedDict


class TxBudget:
    def __init__(self, rate: float = 500.0, burst: float = 2_000.0, max_senders: int = 4_096) -> None:
        self.rate, self.burst, self.max_senders = rate, burst, max_senders
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()    # sender -> (tokens, at)
        self.dropped: dict[str, int] = {}
        self._held_until: OrderedDict[str, float] = OrderedDict()
        self.holds = 0
        self.charged = 0        # transactions other validators admitted and charged here

    def take(self, sender: str, now: float) -> bool:
        """One transaction from `sender` at `now`: True when its budget allows it."""
        tokens = self._refilled(sender, now)
        allowed = tokens >= 1.0
        self._keep(sender, tokens - 1.0 if allowed else tokens, now)
        if not allowed:
            self.dropped[sender] = self.dropped.get(sender, 0) + 1
            if len(self.dropped) > self.max_senders:
                del self.dropped[next(iter(self.dropped))]
        return allowed

    def charge(self, sender: str, now: float) -> None:
        """One transaction of `sender`'s that another validator admitted: spend it here too, past empty into a
        debt of at most a burst (so what others admitted for it is not admitted again from it here)."""
        self._keep(sender, max(-self.burst, self._refilled(sender, now) - 1.0), now)
        self.charged += 1

    def _refilled(self, sender: str, now: float) -> float:
        tokens, at = self._buckets.pop(sender, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def _keep(self, sender: str, tokens: float, now: float) -> None:
        self._buckets[sender] = (tokens, now)       # most recently heard last: the oldest is forgotten first
        if len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)

    def hold_for(self, sender: str, now: float) -> float | None:
        """After `take` refused `sender`: seconds to read nothing from it, until its bucket holds a second's
        worth again (so never over a second: the link's heartbeats wait too); None while an earlier hold
        still covers `now` (what was read before it began is still being dropped)."""
        if self._held_until.get(sender, 0.0) > now:
            return None
        tokens = self._buckets[sender][0] if sender in self._buckets else 0.0
        seconds = min(1.0, max(0.05, (min(self.burst, self.rate) - tokens) / self.rate))
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
                "charged_by_relays": self.charged,
                "throttled": [{"peer": peer, "dropped": count} for peer, count in worst]}
