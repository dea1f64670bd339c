"""Who a public surface (the control API and the /ws stream together; each Grenache HTTP server) refused or cut
lately, and why: by address and by network (/24 or /48, so one source rotating its addresses is still one row),
for /status and the console.

Counters say how often a limit refused; this says whom. It is bounded whoever floods: at most CAPACITY
addresses and CAPACITY networks, the least recently refused forgotten first, and a source not refused for
RECENT seconds drops out. The reasons are the limits' own names, a fixed set.
"""
from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, TypedDict

from p2p.public.sources import subnet_of

CAPACITY = 1024
RECENT = 600.0
TOP = 10


class RefusedSource(TypedDict):
    source: str                 # an address, or a network (CIDR)
    refused: int
    reasons: dict[str, int]     # e.g. api_connections_per_address, ws_subscriptions_per_subnet, api_header_timeout
    last_s_ago: float


class RefusalsView(TypedDict):
    window_s: float
    addresses: list[RefusedSource]
    subnets: list[RefusedSource]


@dataclass
class _Entry:
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    last: float = 0.0


class _Recent:
    """Entries by key, the least recently refused first; bounded by count and by age."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, _Entry] = OrderedDict()

    def record(self, key: str, reason: str, now: float) -> None:
        entry = self.entries.pop(key, None) or _Entry()
        entry.refused += 1
        entry.reasons[reason] = entry.reasons.get(reason, 0) + 1
        entry.last = now
        self.entries[key] = entry
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def prune(self, before: float) -> None:
        while self.entries:
            key, entry = next(iter(self.entries.items()))
            if entry.last >= before:
                return
            del self.entries[key]

    def top(self, count: int, now: float) -> list[RefusedSource]:
        heaviest = heapq.nlargest(count, self.entries.items(), key=lambda item: item[1].refused)
        return [{"source": key, "refused": entry.refused, "reasons": dict(entry.reasons),
                 "last_s_ago": round(now - entry.last, 1)} for key, entry in heaviest]


class RefusalLog:
    def __init__(self, capacity: int = CAPACITY, recent: float = RECENT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recent, self.clock = recent, clock
        self.addresses = _Recent(capacity)
        self.subnets = _Recent(capacity)

    def record(self, address: str, reason: str) -> None:
        """`address` was refused or cut by the limit named `reason`."""
        now = self.clock()
        self.addresses.record(address, reason, now)
        self.subnets.record(subnet_of(address), reason, now)

    def view(self, top: int = TOP) -> RefusalsView:
        """The `top` most refused addresses and networks of the last RECENT seconds."""
        now = self.clock()
        for recent in (self.addresses, self.subnets):
            recent.prune(now - self.recent)
        return {"window_s": self.recent, "addresses": self.addresses.top(top, now),
                "subnets": self.subnets.top(top, now)}
