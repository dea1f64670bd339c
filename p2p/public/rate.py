"""How fast each client of a public surface may ask: a token bucket per address and one per network (/24 or /48,
SUBNET_FACTOR times an address's rate, so one network cannot rotate addresses around it), each holding
BURST_SECONDS of its rate, and behind them a total shared by network. A unit is what the surface counts: a request to the control
API's public routes or to the Grenache RPC endpoint, a frame on the Grenache message path.

`check` admits a request while its client has a whole unit in each bucket, and takes what the request may be
worth at most (`reserve`: one, or a message request's most frames) up front, before its body is read; `settle`
gives back what it did not cost once it is decoded. A client in debt is refused until it is repaid, so its rate
holds over time, and since every admitted request has paid its most up front, however many a client starts at
once no bucket goes more than one request's worth below zero: credit cannot drain a network's share or the
total for later askers.

The total is shared by network, as the chain's transaction budget shares its own: each network admitted something
within ACTIVE_SECONDS has an even part of the total's rate (`TotalParts`), in a bucket of its own holding
BURST_SECONDS of that part, so a network asking for less than its part is never refused whatever the others do,
and there is no shared bucket for many networks to race for. A network new to the total starts with one
second's worth of its part (each newcomer makes every part smaller: k networks arriving together start with
1 + 1/2 + ... + 1/k seconds of the total between them), and one gone quiet keeps its debt until it is repaid.

The maps are bounded: the least recently heard address or network is forgotten first and starts again with a
full bucket (a part of the total: with one second of it), which the network's bucket and its part still bound.
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
ACTIVE_SECONDS = BURST_SECONDS      # a network admitted nothing for this long no longer shares the total
START_SECONDS = 1.0                 # of its part: what a network new to the total starts with

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


class TotalParts:
    """The total's rate shared evenly among the networks admitted lately, each part a bucket of its own (see the
    module docstring). Same calls as `Buckets`, by network. Bounded: at most MAX_TRACKED networks (the least
    recently heard forgotten: it starts again as new, with one second of its part)."""

    def __init__(self, rate: float, burst_seconds: float = BURST_SECONDS) -> None:
        self.rate, self.burst_seconds = rate, burst_seconds
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()     # network -> (tokens, when)
        self._active: OrderedDict[str, float] = OrderedDict()      # network -> when last admitted, oldest first

    def networks(self, now: float) -> int:
        """How many networks share the total now (admitted something within ACTIVE_SECONDS)."""
        active = self._active
        while active and (len(active) > MAX_TRACKED or next(iter(active.values())) < now - ACTIVE_SECONDS):
            active.popitem(last=False)
        return len(active)

    def part(self, network: str, now: float) -> float:
        """The rate of `network`'s part: the total over the networks sharing it, itself among them."""
        return self.rate / (self.networks(now) + (0 if network in self._active else 1))

    def tokens(self, network: str, now: float) -> float:
        part = self.part(network, now)
        tokens, at = self._state.pop(network, (part * START_SECONDS, now))
        tokens = min(part * self.burst_seconds, tokens + max(0.0, now - at) * part)
        self._state[network] = (tokens, now)
        if len(self._state) > MAX_TRACKED:
            self._state.popitem(last=False)
        return tokens

    def wait(self, network: str, now: float, need: float = 1.0) -> float:
        tokens = self.tokens(network, now)
        return 0.0 if tokens >= need else (need - tokens) / self.part(network, now)

    def __len__(self) -> int:
        return len(self._state)

    def take(self, network: str, now: float, amount: float) -> None:
        """Take `amount` (give back, when negative) from the part of `network`, which now shares the total."""
        tokens = self.tokens(network, now)
        self._state[network] = (min(tokens - amount, self.part(network, now) * self.burst_seconds), now)
        self._active.pop(network, None)
        self._active[network] = now


class ClientRate:
    """See the module docstring. `surface` names the refusals it records: api_rate_per_address,
    grenache_msg_rate_total."""

    def __init__(self, per_address: float, total: float, *, surface: str = "api",
                 clock: Callable[[], float] = time.monotonic, refusals: RefusalLog | None = None) -> None:
        self.by_address = Buckets(per_address, per_address * BURST_SECONDS)
        self.by_subnet = Buckets(per_address * SUBNET_FACTOR, per_address * SUBNET_FACTOR * BURST_SECONDS)
        self.parts = TotalParts(total)
        self.surface = surface
        self.clock = clock
        self.refusals = refusals
        self.refused: dict[str, int] = {"per_address": 0, "per_subnet": 0, "total": 0}

    @property
    def total_rate(self) -> float:
        return self.parts.rate

    def _buckets(self, address: str) -> tuple[tuple[Limit, Buckets | TotalParts, str], ...]:
        network = subnet_of(address)
        return (("per_address", self.by_address, host_of(address)), ("per_subnet", self.by_subnet, network),
                ("total", self.parts, network))

    def check(self, address: str, reserve: float = 1.0) -> tuple[Limit, float] | None:
        """None when `address` may go now (`reserve` units taken); else (the limit that refuses it, seconds to
        wait)."""
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
            table.take(key, now, reserve)
        return None

    def settle(self, address: str, units: float, reserved: float) -> None:
        """The request `check` admitted on `reserved` units was worth `units`: the difference is given back, or
        (when it cost more than was reserved) taken on credit."""
        if units == reserved:
            return
        now = self.clock()
        for _, table, key in self._buckets(address):
            table.take(key, now, units - reserved)
