"""How many transactions each neighbour may hand a validator per second, checked before any signature is.

Verifying a signature is the costly part of admitting a transaction, and a fresh account costs nothing,
so a neighbour is metered before anything it sends is parsed; being over budget is never penalised (a
follower relaying a busy API is bursty, not hostile). Validators relaying to each other carry everyone's
transactions and are not metered here; their own intake is. The map of senders is bounded: the least
recently heard is forgotten first (it starts again as a newcomer, with a tenth of a second's worth, as does
a neighbour silent for ACTIVE_SECONDS).

Behind the neighbours' budgets is a total (`total_rate`): while more send than it covers at their full rate,
it is shared out by network first, then by neighbour: each network sending (the /24 or /48 of a neighbour's
link, a relayed link's that of its relay; those heard within ACTIVE_SECONDS whose link is still open) gets an
equal part, and each of its neighbours sending an equal part of that; origins without a link share one part. Keys
are free and addresses are not: a crowd of fresh keys from one network slows itself, not the validator nor a
neighbour on another network, and a quiet neighbour keeps its own small flow whoever fills the rest: its
bucket refills at the same share as everyone's.

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
AT_BUDGET_SECONDS = 1.0      # a neighbour held this recently sends at its budget (`at_budget`)
ACTIVE_SECONDS = 10.0        # a neighbour that handed us a transaction this recently has a share of the total
SHOWN_SENDERS = 32            # senders /status names, the most held first (as many as the console's table)
UNLINKED = "unlinked"         # the group of origins that hand us transactions without a link of their own


class TxBudget:
    def __init__(self, rate: float = 200.0, burst: float = 200.0, total_rate: float = float("inf"),
                 max_senders: int = 4_096) -> None:
        self.rate, self.burst, self.total_rate, self.max_senders = rate, burst, total_rate, max_senders
        # sender -> (when it last took, its group), oldest first; and how many of those sending each group holds
        self._active: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._group_size: dict[str, int] = {}
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()    # sender -> (tokens, at)
        self.dropped: dict[str, int] = {}
        self.held: dict[str, int] = {}         # holds per sender (bounded like `dropped`)
        self._held_until: OrderedDict[str, float] = OrderedDict()
        self.holds = 0

    def share(self, now: float, group: str | None = None) -> float:
        """A neighbour's rate at `now`: its own, or, if less, an equal part of the total among the networks sending,
        and of its network's part among that network's neighbours sending (`group`, a `group_key`: by default the
        origins without a link; a group not sending now is one more network of one neighbour)."""
        self._forget_silent(now)
        size = self._group_size.get(UNLINKED if group is None else group)
        if size is not None:
            return min(self.rate, self.total_rate / len(self._group_size) / size)
        return min(self.rate, self.total_rate / (len(self._group_size) + 1))

    def _forget_silent(self, now: float) -> None:
        horizon = now - ACTIVE_SECONDS
        while self._active and next(iter(self._active.values()))[0] < horizon:
            self._leave(self._active.popitem(last=False)[1][1])

    def _leave(self, group: str) -> None:
        left = self._group_size[group] - 1
        if left:
            self._group_size[group] = left
        else:
            del self._group_size[group]

    def _limits(self, sender: str, now: float, group: str) -> tuple[float, float, bool]:
        """`sender`'s (rate, burst) now, counting it among those sending in `group` (a burst is at most a second's
        share), and whether it was one of them already."""
        self._forget_silent(now)
        known = self._active.pop(sender, None)
        if known is None or known[1] != group:
            if known is not None:
                self._leave(known[1])
            self._group_size[group] = self._group_size.get(group, 0) + 1
        self._active[sender] = (now, group)
        if len(self._active) > self.max_senders:
            self._leave(self._active.popitem(last=False)[1][1])
        rate = self.share(now, group)
        return rate, min(self.burst, max(1.0, rate)), known is not None

    @staticmethod
    def group_key(network: str | None) -> str:
        """Whose share a neighbour's transactions come out of: its network's (the /24 or /48 of its link, or the
        relay carrying it); without a link (a request routed to us for an origin we do not link to), one part
        shared by all such origins: any key can claim to be one, so they may dilute only each other."""
        return f"net:{network}" if network is not None else UNLINKED

    def forget(self, sender: str) -> None:
        """`sender`'s link closed: it no longer counts among those sending (its bucket stays, for when it is back),
        so keys linking, sending once and hanging up count at most as many as a network holds links at once."""
        active = self._active.pop(sender, None)
        if active is not None:
            self._leave(active[1])

    @staticmethod
    def _tenth(rate: float, burst: float) -> float:
        """A tenth of a second's worth at `rate` (at least one transaction, at most `burst`): what a newcomer
        starts with and what a hold waits to refill."""
        return min(burst, max(1.0, rate * HOLD_REFILL_SECONDS))

    def take(self, sender: str, now: float, network: str | None = None) -> bool:
        """One transaction from `sender` (on `network`, if known: see `group_key`) at `now`: True when its budget
        allows it."""
        rate, burst, known = self._limits(sender, now, self.group_key(network))
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

    def at_budget(self, sender: str, now: float) -> bool:
        """Whether `sender` was held within the last AT_BUDGET_SECONDS: it sends as fast as its share lets it, so
        its transactions ride the heights others start rather than each starting one (ChainCore.start_height)."""
        until = self._held_until.get(sender)
        return until is not None and now < until + AT_BUDGET_SECONDS

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
        active = self._active.get(sender)
        rate, burst, _ = self._limits(sender, now, active[1] if active is not None else self.group_key(None))
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
        return {"rate": self.rate, "burst": self.burst, "total_rate": total, "networks_sending": len(self._group_size),
                "dropped_total": sum(self.dropped.values()), "holds": self.holds,
                "throttled": [{"peer": peer, "network": self._network(peer), "held": self.held.get(peer, 0),
                               "dropped": self.dropped.get(peer, 0)} for peer in worst]}

    def _network(self, sender: str) -> str | None:
        """The network whose share `sender` spends now (None: it has no link, or has not sent lately)."""
        active = self._active.get(sender)
        return active[1].removeprefix("net:") if active is not None and active[1].startswith("net:") else None
