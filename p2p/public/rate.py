"""How fast each client of a public surface may ask: a token bucket per address and one per network (/24 or /48,
SUBNET_FACTOR times an address's rate, so one network cannot rotate addresses around it), each holding
BURST_SECONDS of its rate, and behind them a total shared by network. A unit is what the surface counts: a request
to the control API's public routes or to the Grenache RPC endpoint, a frame on the Grenache message path.

`check` admits a request while its client has a whole unit in each bucket, and takes what the request may be
worth at most (`reserve`: one, or a message request's most frames) up front from its address's and network's
buckets, before its body is read; `settle` gives back what it did not cost once it is decoded. A client in debt is
refused until it is repaid, so its rate holds over time, and since every admitted request has paid its most up
front, however many a client starts at once neither bucket goes more than one request's worth below zero.

The total is shared by network, max-min fairly (`TotalParts`): what each network took lately (an average over
USE_SECONDS) and which networks their part refused set a fair level by water-filling, networks taking less than an
even part of what is left counted at what they take and those refused sharing the rest; each network's part is a
bucket of its own refilling at that level, which a virtual clock integrates, so a part refills at the levels it held
and not at the one of the moment it next asks. A part is charged what a request cost when it settles; what a request
may be worth beyond what its part holds (a message request's most frames, against parts a few frames deep once
thousands of networks are known; for a network whose requests cost little lately, twice the most one cost) must be
on credit: a bucket of BURST_SECONDS of the total refilling at what the parts leave of the total (so parts and
credit together hold it over time), taken only by what requests cost beyond their parts. A request the credit cannot
cover when it settles is refused unhandled, and a part goes at most one request below zero, so networks asking at
once get BURST_SECONDS of the total beyond their parts however many they are. CREDIT_KEPT of the credit is for
networks in use (a request fitted the part lately, none took credit for USE_SECONDS): networks quiet until they ask
at once, or taking credit in turns, cannot take it. A network asking for less than its part in requests its part
holds is never refused whatever the others do, and networks asking for little do not shrink the others' parts: what
they leave is the others'. A network new to the total starts with one second of an even part, and newcomers come in
at NEWCOMERS_PER_SECOND, so networks the node has not heard from (or forgot, past MAX_TRACKED) cannot take the total
by arriving; at most half of them from one group (a /16 or /32, `group_of`), so one provider's block of fresh
networks cannot take every newcomer's turn.

The maps are bounded: the least recently heard address or network is forgotten first and starts again with a
full bucket (a part of the total: as a newcomer), which the network's bucket and its part still bound.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable, Literal, NamedTuple

from p2p.public.refusals import RefusalLog
from p2p.public.sources import group_of, host_of, subnet_of

BURST_SECONDS = 2.0
SUBNET_FACTOR = 4
MAX_TRACKED = 8192
USE_SECONDS = 10.0                  # what a network takes of the total is an average over about this long: longer
                                    # than a network that asks now and then waits between asks
LEVEL_EVERY = 0.1                   # s between computations of the total's fair level
SHORT_SECONDS = BURST_SECONDS       # a network its part refused wants more than it has for as long after its last
                                    # refusal as it had been refused in a row, at most this long ...
SHORT_FIRST = 2 * LEVEL_EVERY       # ... and at least this long (a computation of the level sees it)
NEWCOMERS_PER_SECOND = 16.0         # networks new to the total let in a second (bursts of two seconds' worth) ...
NEWCOMERS_PER_GROUP = NEWCOMERS_PER_SECOND / 2     # ... of them from one /16 or /32 (`group_of`) at most
START_SECONDS = 1.0                 # of an even part: what a network new to the total starts with
CREDIT_FLOOR = 0.05                 # of the total, the least the credit refills at, however much the parts take
CREDIT_KEPT = 0.5                   # of the credit, what only networks whose requests fit their parts lately may use

Limit = Literal["per_address", "per_subnet", "total"]


class _Standing(NamedTuple):
    """What a network's settled requests say of it: whether it is in use (`fitted` lately, not `owed` lately) and
    what its next request is expected to cost at most (twice `largest`, within three USE_SECONDS of `largest_at`)."""

    fitted: float = -math.inf       # when a request of it last fitted its part
    owed: float = -math.inf         # when one last took credit
    largest: float = 0.0            # the most one cost lately ...
    largest_at: float = -math.inf   # ... and when


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
    """The total's rate shared max-min fairly among the networks asking for it lately, each network's part a bucket
    of its own, and the credit behind the parts (see the module docstring). `wait` and `admit` by network and
    reserve, as `Buckets`' wait and take; `settle` charges what a request cost, `took` counts it in the network's
    demand. Bounded: at most MAX_TRACKED networks in each map (the least recently heard forgotten)."""

    def __init__(self, rate: float, burst_seconds: float = BURST_SECONDS) -> None:
        self.rate, self.burst_seconds = rate, burst_seconds
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()     # network -> (tokens, virtual time)
        self._demand: OrderedDict[str, tuple[float, float]] = OrderedDict()    # network -> (units/s taken, when)
        self._short: OrderedDict[str, float] = OrderedDict()    # network -> when its part last refused it
        self._refused: dict[str, float] = {}    # network -> when its part first refused it, in a row, lately
        self._out: dict[str, tuple[int, float]] = {}    # network -> (requests admitted on a reserve and not
                                                        # settled yet, their reserves)
        self._standing: OrderedDict[str, _Standing] = OrderedDict()
        self._credit = Buckets(rate, rate * burst_seconds, limit=1)     # what requests may cost beyond their parts
        self.floor = 1.0                    # a part is at least this deep: one unit, so a request can always go
        self._newcomers = Buckets(NEWCOMERS_PER_SECOND, NEWCOMERS_PER_SECOND * burst_seconds, limit=1)
        self._newcomer_groups = Buckets(NEWCOMERS_PER_GROUP, NEWCOMERS_PER_GROUP * burst_seconds)
        self._level = rate                  # the fair level: what each network's part refills at
        self._level_at: float | None = None
        self._networks = 0                  # networks asking lately, as of the level's last computation ...
        self._joined = 0                    # ... and newcomers let in since
        self._virtual = 0.0                 # the level integrated over time: what a part has refilled since
        self._virtual_at: float | None = None

    # --- demand and the fair level --------------------------------------------------------------------------
    def took(self, network: str, now: float, amount: float) -> None:
        """`network` used `amount` units of the total (gave back, when negative): what its demand is made of."""
        demand = max(0.0, self._demand_of(network, now) + amount / USE_SECONDS)
        self._demand.pop(network, None)
        self._demand[network] = (demand, now)
        if len(self._demand) > MAX_TRACKED:
            self._demand.popitem(last=False)

    def reserved(self, network: str, units: float = 0.0) -> None:
        """A request of `network` was admitted on a reserve of `units`; `settled` follows."""
        count, out = self._out.get(network, (0, 0.0))
        self._out[network] = (count + 1, out + units)

    def settled(self, network: str, units: float = 0.0) -> None:
        count, out = self._out.get(network, (0, 0.0))
        if count > 1:
            self._out[network] = (count - 1, out - units)
        else:
            self._out.pop(network, None)

    def _demand_of(self, network: str, now: float) -> float:
        value, at = self._demand.get(network, (0.0, now))
        return value * math.exp(-max(0.0, now - at) / USE_SECONDS)

    def networks(self, now: float) -> int:
        """How many networks took something lately (within three USE_SECONDS) or were refused by their part."""
        demand, short = self._demand, self._short
        while demand and next(iter(demand.values()))[1] < now - 3 * USE_SECONDS:
            demand.popitem(last=False)
        while short and (len(short) > MAX_TRACKED or next(iter(short.values())) < now - SHORT_SECONDS):
            self._refused.pop(short.popitem(last=False)[0], None)
        return len(demand.keys() | short.keys())

    def _fair_level(self, now: float) -> float:
        """Max-min fairness (water-filling): a network its part refused lately wants more than it has (for as long
        after its last refusal as it had been refused in a row: a crowd refused once each pulls the level down
        for SHORT_FIRST, not SHORT_SECONDS); the others are counted at what they took, while that is less than an
        even part of what is left; the level is the even part of the rest. The whole rate when all fit."""
        self._networks, self._joined = self.networks(now), 0
        refused_at = self._refused.get
        short = {network for network, last in self._short.items()
                 if now - last <= SHORT_FIRST or now - last <= last - refused_at(network, last - SHORT_SECONDS)}
        exp, decay = math.exp, 1.0 / USE_SECONDS      # `_demand_of` inlined: this runs over every network
        taking = [value * exp((at - now) * decay) if at < now else value for value, at in self._demand.values()]
        self._credit.tokens("*", now)       # the credit refills at what the parts leave: together they hold the total
        self._credit.rate = max(self.rate * CREDIT_FLOOR, self.rate - sum(taking))
        demands = sorted([demand for network, demand in zip(self._demand, taking) if network not in short]
                         + [math.inf] * len(short))
        remaining, left = self.rate, len(demands)
        for demand in demands:
            share = remaining / left
            if demand >= share:
                return share
            remaining -= demand
            left -= 1
        return self.rate

    def _advance(self, now: float) -> None:
        if self._virtual_at is None:
            self._virtual_at = now
        self._virtual += self._level * max(0.0, now - self._virtual_at)
        self._virtual_at = max(now, self._virtual_at)
        if self._level_at is None or now - self._level_at >= LEVEL_EVERY:
            # up or down at once: what parts hold is bounded by their depth, what requests cost beyond by the credit
            self._level, self._level_at = self._fair_level(now), now

    def part(self, network: str, now: float) -> float:
        """The rate a part refills at now: the fair level, the same for every network."""
        self._advance(now)
        return self._level

    def _depth(self) -> float:
        """How much a part may hold: BURST_SECONDS of the level, and of an even part among the networks holding a
        part, so that all the parts together hold BURST_SECONDS of the total at most; and never less than one unit
        (a request may always go once its debt is repaid, however many networks the node remembers)."""
        return max(self.floor, self.burst_seconds * min(self._level, self.rate / max(1, len(self._state))))

    # --- the parts, as buckets ------------------------------------------------------------------------------
    def tokens(self, network: str, now: float) -> float:
        """What the part of `network` holds (a network new to the total: one second of an even part among the
        networks asking lately, and at least one unit: the newcomers' pace bounds them together)."""
        self._advance(now)
        depth = self._depth()       # with this network counted, as `take` counts it: admission and settle agree
        state = self._state.pop(network, None)
        if state is None:
            return max(1.0, min(self._level, self.rate / (self._networks + self._joined + 1)) * START_SECONDS)
        tokens = min(depth, state[0] + (self._virtual - state[1]))
        self._state[network] = (tokens, self._virtual)
        return tokens

    def wait(self, network: str, now: float, reserve: float = 1.0) -> float:
        """0 when a request of `network` that may be worth `reserve` may go now, else the seconds until it may: its
        part must hold a unit, and what this request and the network's others out may be worth beyond the part
        must be on credit."""
        if network not in self._state:     # new to the total: newcomers come in at NEWCOMERS_PER_SECOND, a group's
            wait = max(self._newcomers.wait("*", now), self._newcomer_groups.wait(group_of(network), now))
            if wait:                        # at NEWCOMERS_PER_GROUP
                return wait
        tokens = self.tokens(network, now)
        if tokens < 1:
            self._refusing(network, now)
            return (1 - tokens) / max(self.part(network, now), 1e-9)
        beyond = self._expected(network, now, reserve) + self._out.get(network, (0, 0.0))[1] - tokens
        credit = self._credit_for(network, now)
        return 0.0 if beyond <= max(0.0, credit) else (beyond - credit) / self._credit.rate

    def _expected(self, network: str, now: float, reserve: float) -> float:
        """What a request of `network` admitted on `reserve` is expected to cost: twice the most one of its requests
        cost within three USE_SECONDS, as long as it counts as in use (a network sending small requests needs no
        credit for a reserve it never uses), the whole reserve without one. One that costs more is judged at
        `settle`, and counts from then on."""
        standing = self._standing.get(network)
        if standing is None or now - standing.largest_at > 3 * USE_SECONDS:
            return reserve
        return min(reserve, max(1.0, 2 * standing.largest))

    def _refusing(self, network: str, now: float) -> None:
        """Its part refused `network`: it is short (see `_fair_level`)."""
        last = self._short.pop(network, None)
        if last is None or now - last > SHORT_SECONDS:
            self._refused[network] = now
        self._short[network] = now

    def _credit_for(self, network: str, now: float) -> float:
        """The credit `network` may use: all of it when a request of it fitted its part lately and none took credit
        for USE_SECONDS, else what is left above CREDIT_KEPT of it: networks quiet until they ask at once, or
        taking credit in turns, cannot take what a network in use needs."""
        standing = self._standing.get(network, _Standing())
        in_use = now - standing.fitted <= 3 * USE_SECONDS and now - standing.owed > USE_SECONDS
        return self._credit.tokens("*", now) - (0.0 if in_use else self._credit.burst * CREDIT_KEPT)

    def admit(self, network: str, now: float, reserve: float) -> None:
        """A request of `network` goes on `reserve` (one unit: taken now; more: what it cost is taken at `settle`)."""
        if reserve > 1:
            self.take(network, now, 0.0)
            self.reserved(network, reserve)
        else:
            self.take(network, now, reserve)
            self.took(network, now, reserve)

    def settle(self, network: str, now: float, units: float, reserved: float) -> bool:
        """The request `admit` let in on `reserved` is worth `units`: taken from the part, what it holds not being
        enough taken on credit. False (and one unit taken) when neither the credit nor the part can cover it: a
        part goes at most one request below zero."""
        self.settled(network, reserved)
        tokens = self.tokens(network, now)
        beyond, handled, credit = units - max(0.0, tokens), True, self._credit_for(network, now)
        standing = self._standing.pop(network, _Standing())
        if units >= standing.largest or now - standing.largest_at > 3 * USE_SECONDS:
            standing = standing._replace(largest=units, largest_at=now)
        if beyond <= 0:
            standing = standing._replace(fitted=now)
        elif tokens - units >= 1 - reserved and beyond <= credit:
            self._credit.take("*", now, beyond)
            standing = standing._replace(owed=now)
        else:
            units, handled = 1.0, False
        self._standing[network] = standing
        if len(self._standing) > MAX_TRACKED:
            self._standing.popitem(last=False)
        self.take(network, now, units)
        self.took(network, now, units)
        return handled

    def take(self, network: str, now: float, amount: float) -> None:
        """Take `amount` (give back, when negative) from the part of `network`."""
        newcomer = network not in self._state
        tokens = self.tokens(network, now)
        if newcomer:
            self._newcomers.take("*", now, 1.0)
            self._newcomer_groups.take(group_of(network), now, 1.0)
            self._joined += 1
        self._state[network] = (min(tokens - amount, self._depth()), self._virtual)
        if len(self._state) > MAX_TRACKED:
            self._state.popitem(last=False)

    def __len__(self) -> int:
        return len(self._state)


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

    def _buckets(self, address: str) -> tuple[tuple[Limit, Buckets, str], tuple[Limit, Buckets, str]]:
        """The address's and its network's buckets, each with its key (the network's is also its part's key)."""
        return (("per_address", self.by_address, host_of(address)),
                ("per_subnet", self.by_subnet, subnet_of(address)))

    def check(self, address: str, reserve: float = 1.0) -> tuple[Limit, float] | None:
        """None when `address` may go now (`reserve` units taken; the total's part is charged at `settle` when the
        reserve is more than one); else (the limit that refuses it, seconds to wait)."""
        now = self.clock()
        buckets = self._buckets(address)
        network = buckets[1][2]
        for name, table, key in buckets:
            if wait := table.wait(key, now):
                return self._refuse(address, name, wait)
        if wait := self.parts.wait(network, now, reserve):
            return self._refuse(address, "total", wait)
        for _, table, key in buckets:
            table.take(key, now, reserve)
        self.parts.admit(network, now, reserve)
        return None

    def _refuse(self, address: str, limit: Limit, wait: float) -> tuple[Limit, float]:
        self.refused[limit] += 1
        if self.refusals is not None:
            self.refusals.record(address, f"{self.surface}_rate_{limit}")
        return limit, wait

    def settle(self, address: str, units: float, reserved: float) -> bool:
        """The request `check` admitted on `reserved` units was worth `units`: the difference is given back, or
        (when it cost more than was reserved) taken on credit. False when the total cannot cover it: it is to be
        refused unhandled, and costs one unit."""
        now = self.clock()
        buckets = self._buckets(address)
        network = buckets[1][2]
        handled = True
        if reserved > 1:
            handled = self.parts.settle(network, now, units, reserved)
            units = units if handled else 1
        elif units != reserved:
            self.parts.take(network, now, units - reserved)
        if units != reserved:
            for _, table, key in buckets:
                table.take(key, now, units - reserved)
        return handled
