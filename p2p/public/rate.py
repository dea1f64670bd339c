"""How fast each client of a public surface may ask: a token bucket per address, one per network (/24 or /48,
SUBNET_FACTOR times an address's rate, so one network cannot rotate addresses around it) and one for everyone
behind them, each holding BURST_SECONDS of its rate. A unit is what the surface counts: a request to the control
API's public routes or to the Grenache RPC endpoint, a frame on the Grenache message path.

`check` takes one unit from each bucket, or none when one of them is short; `charge` takes more afterwards, on
credit (a request whose cost is known only once its body is read), and a client in debt is refused until it is
repaid, so its rate holds over time. The maps are bounded: the least recently heard address or network is
forgotten first and starts again with a full bucket, which the network's and everyone's buckets still bound.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Literal

from p2p.public.refusals import RefusalLog
from p2p.public.sources import host_of, subnet_of

BURST_SECONDS = 2.0
SUBNET_FACTOR = 4
MAX_TRACKED = 8192

Limit = Literal["per_address", "per_subnet", "total"]


class Buckets:
    """Token buckets by key, bounded in number (least recently used forgotten). A bucket may go below zero
    (`take` on credit): it then waits until it has a whole token again."""

    def __init__(self, rate: float, burst: float, limit: int = MAX_TRACKED) -> None:
        self.rate, self.burst, self.limit = rate, burst, limit
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._state.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        self._state[key] = (tokens, now)
        if len(self._state) > self.limit:
            self._state.popitem(last=False)
        return tokens

    def wait(self, key: str, now: float) -> float:
        """0 when `key` has a whole token now, else the seconds until it will."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: str, now: float, amount: float) -> None:
        self._state[key] = (self._tokens(key, now) - amount, now)

    def __len__(self) -> int:
        return len(self._state)


class ClientRate:
    """See the module docstring. `surface` names the refusals it records: api_rate_per_address,
    grenache_msg_rate_total."""

    def __init__(self, per_address: float, total: float, *, surface: str = "api",
                 clock: Callable[[], float] = time.monotonic, refusals: RefusalLog | None = None) -> None:
        self.by_address = Buckets(per_address, per_address * BURST_SECONDS)
        self.by_subnet = Buckets(per_address * SUBNET_FACTOR, per_address * SUBNET_FACTOR * BURST_SECONDS)
        self.overall = Buckets(total, total * BURST_SECONDS, limit=1)
        self.surface = surface
        self.clock = clock
        self.refusals = refusals
        self.refused: dict[str, int] = {"per_address": 0, "per_subnet": 0, "total": 0}

    def _buckets(self, address: str) -> tuple[tuple[Limit, Buckets, str], ...]:
        return (("per_address", self.by_address, host_of(address)), ("per_subnet", self.by_subnet, subnet_of(address)),
                ("total", self.overall, "*"))

    def check(self, address: str) -> tuple[Limit, float] | None:
        """None when `address` may go now (a unit taken); else (the limit that refuses it, seconds to wait)."""
        now = self.clock()
        buckets = self._buckets(address)
        for name, table, key in buckets:
            wait = table.wait(key, now)
            if wait:
                self.refused[name] += 1
                if self.refusals is not None:
                    self.refusals.record(address, f"{self.surface}_rate_{name}")
                return name, wait
        for _, table, key in buckets:
            table.take(key, now, 1.0)
        return None

    def charge(self, address: str, units: float) -> None:
        """`address` used `units` more than its check took: taken on credit from each of its buckets."""
        if units <= 0:
            return
        now = self.clock()
        for _, table, key in self._buckets(address):
            table.take(key, now, units)
