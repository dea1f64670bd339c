"""How fast each client of a public surface may ask: a token bucket per address, one per network (/24 or /48,
SUBNET_FACTOR times an address's rate, so one network cannot rotate addresses around it) and one for everyone
behind them, each holding BURST_SECONDS of its rate. A unit is what the surface counts: a request to the control
API's public routes or to the Grenache RPC endpoint, a frame on the Grenache message path.

`check` admits a request while its client has a whole unit in each bucket, and takes what the request may be
worth at most (`reserve`: one, or a message request's most frames) up front, before its body is read; `settle`
gives back what it did not cost once it is decoded. A client in debt is refused until it is repaid, so its rate
holds over time, and since every admitted request has paid its most up front, however many a client starts at
once no bucket goes more than one request's worth below zero: credit cannot drain a network's share or the
total for later askers.

The total refuses the heaviest first: once it holds less than HEADROOM of its burst, only a *light* network may
take from what is left, one that has taken less of the total lately than its even part of that headroom among
the networks taking from it (`TotalUse`: what each took, fading with a time constant of USE_SECONDS). Networks
sending all they may cannot take the last of the total from one that sends a little, and the total itself is
never exceeded. A fresh network looks light until it has taken its part, but each one that arrives makes every
part smaller: fresh networks can drain the headroom for a moment, not hold it (docs/tradeoffs.md).

The maps are bounded: the least recently heard address or network is forgotten first and starts again with a
full bucket, which the network's and everyone's buckets still bound.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable, Literal

from p2p.public.refusals import RefusalLog
from p2p.public.sources import host_of, subnet_of

BURST_SECONDS = 2.0
SUBNET_FACTOR = 4
MAX_TRACKED = 8192
HEADROOM = 0.5      # of the total's burst: below it only light networks are admitted
USE_SECONDS = BURST_SECONDS * HEADROOM      # what a network took of the total fades with this time constant, so one
                                            # taking its even part of the total's rate holds its part of the headroom

Limit = Literal["per_address", "per_subnet", "total"]


class Buckets:
    """Token buckets by key, bounded in number (least recently used forgotten). A bucket may go below zero
    (`take` more than it holds): it then waits until it has a whole token again."""

    def __init__(self, rate: float, burst: float, limit: int = MAX_TRACKED) -> None:
        self.rate, self.burst, self.limit = rate, burst, limit
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def tokens(self, key: str, now: float) -> float:
        tokens, at = self._state.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        self._state[key] = (tokens, now)
        if len(self._state) > self.limit:
            self._state.popitem(last=False)
        return tokens

    def wait(self, key: str, now: float, need: float = 1.0) -> float:
        """0 when `key` has `need` tokens now, else the seconds until it will."""
        tokens = self.tokens(key, now)
        return 0.0 if tokens >= need else (need - tokens) / self.rate

    def take(self, key: str, now: float, amount: float) -> None:
        """Take `amount` (give back, when negative; never past the burst)."""
        self._state[key] = (min(self.burst, self.tokens(key, now) - amount), now)

    def __len__(self) -> int:
        return len(self._state)


class TotalUse:
    """What each network took of the total lately: a sum fading with time constant USE_SECONDS (a network taking
    r units a second holds about r * USE_SECONDS), kept for the networks that took something within
    2 * USE_SECONDS and at most MAX_TRACKED of them (the least recent forgotten)."""

    def __init__(self) -> None:
        self._use: OrderedDict[str, tuple[float, float]] = OrderedDict()    # network -> (use, when), oldest first

    def used(self, network: str, now: float) -> float:
        use, at = self._use.get(network, (0.0, now))
        return use * math.exp(-max(0.0, now - at) / USE_SECONDS)

    def add(self, network: str, now: float, amount: float) -> None:
        use = max(0.0, self.used(network, now) + amount)
        self._use.pop(network, None)
        self._use[network] = (use, now)

    def networks(self, now: float) -> int:
        """How many networks took something lately (at least one: whoever asks)."""
        use = self._use
        while use and (len(use) > MAX_TRACKED or next(iter(use.values()))[1] < now - 2 * USE_SECONDS):
            use.popitem(last=False)
        return max(1, len(use))


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
        self.total_use = TotalUse()

    def _buckets(self, address: str) -> tuple[tuple[Limit, Buckets, str], ...]:
        return (("per_address", self.by_address, host_of(address)), ("per_subnet", self.by_subnet, subnet_of(address)),
                ("total", self.overall, "*"))

    def check(self, address: str, reserve: float = 1.0) -> tuple[Limit, float] | None:
        """None when `address` may go now (`reserve` units taken); else (the limit that refuses it, seconds to
        wait)."""
        now = self.clock()
        buckets = self._buckets(address)
        for name, table, key in buckets:
            wait = table.wait(key, now, self._need(table, address, now))
            if wait:
                self.refused[name] += 1
                if self.refusals is not None:
                    self.refusals.record(address, f"{self.surface}_rate_{name}")
                return name, wait
        for _, table, key in buckets:
            table.take(key, now, reserve)
        self.total_use.add(buckets[1][2], now, reserve)
        return None

    def _need(self, table: Buckets, address: str, now: float) -> float:
        """What `table` must hold to admit `address`: a whole unit, and of the total, its headroom too unless the
        network of `address` is light."""
        if table is not self.overall:
            return 1.0
        headroom = HEADROOM * table.burst
        use = self.total_use
        light = use.used(subnet_of(address), now) < headroom / use.networks(now)
        return 1.0 if light else 1.0 + headroom

    def settle(self, address: str, units: float, reserved: float) -> None:
        """The request `check` admitted on `reserved` units was worth `units`: the difference is given back, or
        (when it cost more than was reserved) taken on credit."""
        if units == reserved:
            return
        now = self.clock()
        for _, table, key in self._buckets(address):
            table.take(key, now, units - reserved)
        self.total_use.add(subnet_of(address), now, units - reserved)
