"""ServeBudget: what the requests this node serves may cost it, charged to whoever asks, before any handler runs.

Four scopes, as libp2p's resource manager scopes them: the requester (the origin key that signed a relayed
request, or the node at the other end of the link for a direct one), the neighbour that relays other nodes'
requests to us, the network the link it came over is from (its /24 or /48, SUBNET_SHARE times one requester's
budgets; none on loopback, the operator's own nodes), and everyone together. Each has two budgets:
- requests a second (a token bucket, bursts of `BURST_SECONDS`' worth);
- bytes of answers a second. An answer's size is known only once its handler has run, so it is charged after:
  a scope in debt is refused until the debt is paid back, and none gets more than one answer beyond its budget.
A request past any of them is answered `rate_limited` with the seconds to wait, at once and without running
its handler (a few dozen bytes, charged to nobody); nobody is penalised, since an honest relay carries what
others ask. Keys are free, so against a crowd of fresh origins it is the neighbour's budget that binds, against
a crowd of fresh neighbours from one network that network's, and behind them the total. The
tables keep the `MAX_TRACKED` requesters and neighbours heard from most recently (a forgotten one starts with a
full budget, as a fresh key would). No I/O; the clock is injectable.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple, TypedDict

BURST_SECONDS = 2.0         # a scope may spend this many seconds' worth of its budget at once
MAX_TRACKED = 4096          # requesters, and neighbours, remembered
SUBNET_SHARE = 2.0          # one network's budgets, in requesters' budgets
SHOWN = 16                  # scopes listed in /status as throttled
RECENT = 60.0               # s: a scope refused this recently is listed as throttled


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """Requests/s and answer bytes/s per requester and per relaying neighbour, and for everyone together."""

    rate: float
    bytes: float
    total_rate: float
    total_bytes: float


class Refusal(NamedTuple):
    scope: str              # "requester", "neighbour" or "total"
    budget: str             # "requests" or "bytes"
    wait: float             # seconds until it may ask again


class _Meter:
    """A budget that refills at `rate` up to `burst` and may be overdrawn by one charge (the bytes of an answer)."""

    __slots__ = ("rate", "burst", "level", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.level, self.stamp = rate, burst, burst, now

    def refill(self, now: float) -> float:
        if now > self.stamp:
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.level

    def wait(self, need: float) -> float:
        """Seconds until the level is at least `need` (0: now); call `refill` first."""
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class _Scope:
    """One requester's, one neighbour's or everyone's budgets, and how often it was refused."""

    __slots__ = ("requests", "bytes", "refused", "refused_at")

    def __init__(self, limits: tuple[float, float], now: float) -> None:
        rate, byte_rate = limits
        self.requests = _Meter(rate, max(1.0, rate * BURST_SECONDS), now)
        self.bytes = _Meter(byte_rate, byte_rate * BURST_SECONDS, now)
        self.refused = 0
        self.refused_at = 0.0

    def refusal(self, name: str, now: float) -> Refusal | None:
        self.requests.refill(now)
        self.bytes.refill(now)
        if self.requests.level < 1.0:
            return Refusal(name, "requests", self.requests.wait(1.0))
        if self.bytes.level <= 0.0:
            return Refusal(name, "bytes", self.bytes.wait(1.0))
        return None


class ThrottledView(TypedDict):
    node_id: str
    refused: int
    seconds_ago: float


class ServeBudgetView(TypedDict):
    """The budgets in /status: the limits, what was refused (by scope and budget), who was refused lately."""

    rate: float
    bytes: float
    total_rate: float
    total_bytes: float
    admitted: int
    refused: dict[str, int]                  # "requester.requests", "neighbour.bytes", "total.requests", ...
    answer_bytes: int
    throttled_requesters: list[ThrottledView]
    throttled_neighbours: list[ThrottledView]
    throttled_subnets: list[ThrottledView]


class ServeBudget:
    """The serving side's budgets (an RpcServer's `budget`)."""

    def __init__(self, limits: ServeLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        now = clock()
        self._one = (limits.rate, limits.bytes)
        self._subnet = (limits.rate * SUBNET_SHARE, limits.bytes * SUBNET_SHARE)
        self._total = _Scope((limits.total_rate, limits.total_bytes), now)
        self._requesters: OrderedDict[str, _Scope] = OrderedDict()
        self._neighbours: OrderedDict[str, _Scope] = OrderedDict()
        self._subnets: OrderedDict[str, _Scope] = OrderedDict()
        self.admitted = 0
        self.answer_bytes = 0
        self.refused: dict[str, int] = {}

    def _scope(self, table: OrderedDict[str, _Scope], key: str, now: float,
               limits: tuple[float, float] | None = None) -> _Scope:
        scope = table.get(key)
        if scope is None:
            scope = table[key] = _Scope(limits or self._one, now)
            if len(table) > MAX_TRACKED:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return scope

    def _scopes(self, requester: str, neighbour: str | None, subnet: str | None,
                now: float) -> list[tuple[str, _Scope]]:
        scopes = [("requester", self._scope(self._requesters, requester, now))]
        if neighbour is not None and neighbour != requester:
            scopes.append(("neighbour", self._scope(self._neighbours, neighbour, now)))
        if subnet is not None:
            scopes.append(("subnet", self._scope(self._subnets, subnet, now, self._subnet)))
        scopes.append(("total", self._total))
        return scopes

    def admit(self, requester: str, neighbour: str | None, subnet: str | None = None) -> Refusal | None:
        """Take one request from every scope it falls in, or say which budget is spent (and take nothing).
        `subnet`: the network of the link it came over (None: loopback, or no address)."""
        now = self.clock()
        scopes = self._scopes(requester, neighbour, subnet, now)
        for name, scope in scopes:
            refusal = scope.refusal(name, now)
            if refusal is not None:
                scope.refused += 1
                scope.refused_at = now
                key = f"{refusal.scope}.{refusal.budget}"
                self.refused[key] = self.refused.get(key, 0) + 1
                return refusal
        for _, scope in scopes:
            scope.requests.level -= 1.0
        self.admitted += 1
        return None

    def charge(self, requester: str, neighbour: str | None, size: int, subnet: str | None = None) -> None:
        """An answer of `size` bytes went to `requester` (through `neighbour`, over a link from `subnet`)."""
        now = self.clock()
        for _, scope in self._scopes(requester, neighbour, subnet, now):
            scope.bytes.refill(now)
            scope.bytes.level -= size
        self.answer_bytes += size

    def view(self) -> ServeBudgetView:
        now = self.clock()
        limits = self.limits
        return {"rate": limits.rate, "bytes": limits.bytes, "total_rate": limits.total_rate,
                "total_bytes": limits.total_bytes, "admitted": self.admitted, "refused": dict(self.refused),
                "answer_bytes": self.answer_bytes,
                "throttled_requesters": _throttled(self._requesters, now),
                "throttled_neighbours": _throttled(self._neighbours, now),
                "throttled_subnets": _throttled(self._subnets, now)}


def _throttled(table: OrderedDict[str, _Scope], now: float) -> list[ThrottledView]:
    recent = [(scope.refused, key, scope.refused_at) for key, scope in table.items()
              if scope.refused and now - scope.refused_at <= RECENT]
    recent.sort(reverse=True)
    return [{"node_id": key, "refused": refused, "seconds_ago": round(now - at, 1)}
            for refused, key, at in recent[:SHOWN]]
