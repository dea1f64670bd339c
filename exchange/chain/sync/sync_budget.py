"""What a node serves peers that catch up: per-peer budgets for sync requests, with a global cap behind them.

A sync request of a few bytes asks for up to a block's worth of certified blocks (and a snapshot chunk
request for 256 KiB), so serving is where a peer's cost is ours: each peer may make `requests_per_s` requests
a second and take `bytes_per_s` bytes of answers a second, and everyone but the current validators together
`total_bytes_per_s`. A request over budget is ignored and counted, never penalised: an honest node catching
up has one request in flight, so it only ever waits (its request times out and it asks again, maybe someone
else), and a full answer always fits a budget that is not in debt, so a far-behind follower still takes a
budget's worth of blocks a second from each peer it asks. The map of peers is bounded: the least recently
heard is forgotten first (it starts again with a full budget, no more), so fresh keys cost us at most the
global cap.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TypedDict


class Bucket:
    """A token bucket that may go into debt by one spend (an answer's size is known only once it is built)."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def level(self, now: float) -> float:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
        return self.tokens

    def spend(self, amount: float, now: float) -> None:
        self.level(now)
        self.tokens -= amount


class ThrottledPeer(TypedDict):
    peer: str
    refused: int


class SyncBudgetView(TypedDict):
    """For /status (exchange.sync_budget): the limits, what was refused, and by whom most."""

    requests_per_s: float
    bytes_per_s: float
    total_bytes_per_s: float
    refused_total: int
    refused_global: int
    throttled: list[ThrottledPeer]


class SyncBudget:
    def __init__(self, requests_per_s: float, bytes_per_s: float, total_bytes_per_s: float,
                 max_peers: int = 4_096) -> None:
        self.requests_per_s, self.bytes_per_s, self.total_bytes_per_s = requests_per_s, bytes_per_s, total_bytes_per_s
        self.max_peers = max_peers
        self._peers: OrderedDict[str, tuple[Bucket, Bucket]] = OrderedDict()     # peer -> (requests, bytes)
        self._total: Bucket | None = None
        self.refused: OrderedDict[str, int] = OrderedDict()        # peer -> requests ignored (bounded)
        self.refused_total = 0
        self.refused_global = 0                                   # of those, for the global cap

    def allowance(self, peer: str, now: float, *, capped: bool = True) -> float:
        """A request from `peer` at `now`: how many bytes its answer may carry (0: ignore it, counted). Takes the
        request from its budget; `capped` False (a current validator) skips the global cap."""
        buckets = self._peers.pop(peer, None)
        if buckets is None:
            buckets = (Bucket(self.requests_per_s, 2 * self.requests_per_s, now),
                       Bucket(self.bytes_per_s, self.bytes_per_s, now))
        self._peers[peer] = buckets
        if len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        requests, answered = buckets
        if requests.level(now) < 1.0:
            return self._refuse(peer, globally=False)
        requests.spend(1.0, now)
        allowed = answered.level(now)
        if capped:
            total = self._total_bucket(now)
            if total.level(now) <= 0.0:
                return self._refuse(peer, globally=True)
            allowed = min(allowed, total.tokens)
        return allowed if allowed > 0.0 else self._refuse(peer, globally=False)

    def spend(self, peer: str, size: int, now: float, *, capped: bool = True) -> None:
        """The answer to `peer` carried `size` bytes."""
        buckets = self._peers.get(peer)
        if buckets is not None:
            buckets[1].spend(size, now)
        if capped:
            self._total_bucket(now).spend(size, now)

    def _total_bucket(self, now: float) -> Bucket:
        if self._total is None:
            self._total = Bucket(self.total_bytes_per_s, self.total_bytes_per_s, now)
        return self._total

    def _refuse(self, peer: str, *, globally: bool) -> float:
        self.refused_total += 1
        self.refused_global += globally
        self.refused[peer] = self.refused.pop(peer, 0) + 1
        if len(self.refused) > self.max_peers:
            self.refused.popitem(last=False)
        return 0.0

    def view(self, top: int = 5) -> SyncBudgetView:
        worst = sorted(self.refused.items(), key=lambda item: item[1], reverse=True)[:top]
        return {"requests_per_s": self.requests_per_s, "bytes_per_s": self.bytes_per_s,
                "total_bytes_per_s": self.total_bytes_per_s, "refused_total": self.refused_total,
                "refused_global": self.refused_global,
                "throttled": [{"peer": peer, "refused": count} for peer, count in worst]}
