"""How many transactions each neighbour may hand a validator per second, checked before any signature is.

Verifying a signature is the costly part of admitting a transaction, and a fresh account costs nothing,
so a neighbour is metered before anything it sends is parsed; being over budget is never penalised (a
follower relaying a busy API is bursty, not hostile). Validators relaying to each other carry everyone's
transactions and are not metered here; their own intake is. The map of senders is bounded: the least
recently heard is forgotten first (it starts again as a newcomer, with a tenth of a second's worth, as does
a neighbour silent for ACTIVE_SECONDS).

Behind the neighbours' budgets is a total (`total_rate`): while more neighbours send than it covers at their
full rate, each gets an equal part of it (max-min fair, over the neighbours heard within ACTIVE_SECONDS), so a
crowd of fresh keys slows itself, not the validator, and a quiet neighbour keeps its own small flow whoever
fills the rest: its bucket refills at the same share as everyone's.

The transaction that takes a neighbour's last whole token also stops its link being read (`hold_for`)
until a tenth of a second's worth has refilled: what it sends meanwhile waits in its own TCP window, not
in our event loop, and is read at the budget's pace in small steps (a longer hold would end in a burst of
that many transactions at once, at every validator together). Nothing it sent is dropped on the way, so
validators reading the same stream admit the same transactions from it: a flood sent to all of them costs
the network one budget, not one per validator. A transaction handed over past the budget anyway (an RPC
submit, a link relayed through a circuit, which is never held) is dropped unread and counted.
"""
from __future__ import annotations

from collections import OrderedDict


HOLD_REFILL_SECONDS = 0.1     # a held neighbour is read again once this much of its rate has refilled
HOLD_MIN_SECONDS = 0.05       # ... and never sooner: a hold per frame would cost more than it saves
ACTIVE_SECONDS = 10.0        # a neighbour that handed us a transaction this recently has a share of the total
SHOWN_SENDERS = 32            # senders /status names, the most held first (as many as the console's table)


class TxBudget:
    def __init__(self, rate: float = 200.0, burst: float = 200.0, total_rate: float = float("inf"),
                 max_senders: int = 4_096) -> None:
        self.rate, self.burst, self.total_rate, self.max_senders = rate, burst, total_rate, max_senders
        self._active: OrderedDict[str, float] = OrderedDict()     # sender -> when it last took, oldest first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()    # sender -> (tokens, at)
        self.dropped: dict[str, int] = {}
        self.held: dict[str, int] = {}         # holds per sender (bounded like `dropped`)
        self._held_until: OrderedDict[str, float] = OrderedDict()
        self.holds = 0

    def share(self, now: float) -> float:
        """A neighbour's rate at `now`: its own, or an equal part of the total among those sending, if less."""
        horizon = now - ACTIVE_SECONDS
        while self._active and next(iter(self._active.values())) < horizon:
            self._active.popitem(last=False)
        return min(self.rate, self.total_rate / max(1, len(self._active)))

    def _limits(self, sender: str, now: float) -> tuple[float, float, bool]:
        """`sender`'s (rate, burst) now, counting it among those sending (a burst is at most a second's share), and
        whether it was one of them already."""
        self.share(now)         # forgets those silent for ACTIVE_SECONDS first
        known = self._active.pop(sender, None) is not None
        self._active[sender] = now
        if len(self._active) > self.max_senders:
            self._active.popitem(last=False)
        rate = min(self.rate, self.total_rate / len(self._active))
        return rate, min(self.burst, max(1.0, rate)), known

    @staticmethod
    def _tenth(rate: float, burst: float) -> float:
        """A tenth of a second's worth at `rate` (at least one transaction, at most `burst`): what a newcomer
        starts with and what a hold waits to refill."""
        return min(burst, max(1.0, rate * HOLD_REFILL_SECONDS))

    def take(self, sender: str, now: float) -> bool:
        """One transaction from `sender` at `now`: True when its budget allows it."""
        rate, burst, known = self._limits(sender, now)
        # a neighbour not sending lately starts with a tenth of a second's worth and earns the rest of its burst
        # by sending within it: a crowd bursting together gets little more than one neighbour's burst at first,
        # and one that sent a little to fill its buckets first has them shrunk to its shares of the total
        start = self._tenth(rate, burst)
        tokens, at = self._buckets.pop(sender, (start, now))
        tokens = min(burst if known else start, tokens + max(0.0, now - at) * rate)
        # a link we held is read again only when its hold is over, and nothing read from it is dropped: if its
        # share fell during the hold (more neighbours began sending), its first transaction is taken on credit
        # (less than one token owed) and its next hold lasts until the debt is paid and a tenth refilled
        allowed = tokens >= 1.0 or (tokens > 0.0 and sender in self._held_until)
        self._buckets[sender] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)
        if not allowed:
            self.dropped[sender] = self.dropped.get(sender, 0) + 1
            if len(self.dropped) > self.max_senders:
                del self.dropped[next(iter(self.dropped))]
        return allowed

    def spent(self, sender: str) -> bool:
        """Whether `sender` has no whole transaction left in its bucket (after the `take` that emptied it)."""
        item = self._buckets.get(sender)
        return item is not None and item[0] < 1.0

    def hold_for(self, sender: str, now: float) -> float:
        """Once `sender`'s bucket is spent: seconds to read nothing from it, until its bucket holds a tenth of a
        second's worth again (so holds stay short: the link's heartbeats wait too). While an earlier hold still
        covers `now`, what is left of it (or until a whole token is back, if longer), not a new hold: the link's
        clock (the event loop's) may end a hold a moment before ours, and what it hands over then is taken on
        credit and waits out the rest instead of being dropped."""
        held_until = self._held_until.get(sender, 0.0)
        rate, burst, _ = self._limits(sender, now)
        tokens, at = self._buckets.get(sender, (0.0, now))
        tokens = min(burst, tokens + max(0.0, now - at) * rate)
        if held_until > now:
            # at least until one whole token is back, if what was handed over early was taken on credit
            until = max(held_until, now + (1.0 - tokens) / rate)
            self._held_until[sender] = until
            return until - now
        refill = self._tenth(rate, burst)
        seconds = max(HOLD_MIN_SECONDS, (refill - tokens) / rate)
        self._held_until.pop(sender, None)
        self._held_until[sender] = now + seconds
        if len(self._held_until) > self.max_senders:
            self._held_until.popitem(last=False)
        self.holds += 1
        self.held[sender] = self.held.get(sender, 0) + 1
        if len(self.held) > self.max_senders:
            del self.held[next(iter(self.held))]
        return seconds

    def view(self, top: int = SHOWN_SENDERS) -> dict[str, object]:
        """For /status: the senders held or dropped most (bounded)."""
        senders = set(self.dropped) | set(self.held)
        worst = sorted(senders, key=lambda peer: self.held.get(peer, 0) + self.dropped.get(peer, 0), reverse=True)[:top]
        total = self.total_rate if self.total_rate != float("inf") else None
        return {"rate": self.rate, "burst": self.burst, "total_rate": total,
                "dropped_total": sum(self.dropped.values()), "holds": self.holds,
                "throttled": [{"peer": peer, "held": self.held.get(peer, 0), "dropped": self.dropped.get(peer, 0)}
                              for peer in worst]}
