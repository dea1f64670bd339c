"""What a broadcast may cost us, charged to whoever causes it, before any signature is checked.

Two budgets, both per someone with a global cap behind them:

- `OpenTypeBudgets`: a broadcast type any key may originate (an RPC health hint) gets a rate per
  neighbour that hands copies over and per origin key, so one link or one key cannot make the whole
  network verify and forward its copies. Fresh keys are free, so the neighbour's rate is what binds
  a spammer; the origin's rate keeps one loud honest origin from using a relay's whole share. Links
  are nearly free too (a crowd of them from a few /24s, each within its own rate, would make this node
  check as many signatures as it holds links), so behind them is a total per type, shared equally by the
  networks (/24 or /48) handing copies over now (`NetworkShares`): a crowd on many networks takes the
  parts of its networks, never an honest relay's. The excess is dropped unforwarded and nobody is
  penalised: the neighbour may be an honest relay. A copy
  larger than its type ever is (fields the signature does not cover, padded to hundreds of kilobytes)
  is dropped first, before it spends a budget or its signature is checked: relayed, every node would
  forward and cache it whole.
- `Pacer`: the copies of such a type that pass the budgets are checked at most at the type's total pace,
  in small steps, the rest waiting in a short queue per network, the networks taking turns: a flooder bursting
  a second's worth at once made every node check all of it in the same few milliseconds, on every node at
  once, which is what slowed honest traffic, not the copies' number (checked one by one over the second they
  cost a fraction of it); and in one queue a network bursting within its part went ahead of everyone else's.
- `GraftBudget`: bytes of cached broadcasts re-sent on request, per neighbour and in all. Together
  with serving each id once per neighbour, a few bytes of `graft` can no longer pull megabytes.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Generic, NamedTuple, TypeVar

from p2p.framing import encode_body
from p2p.messages import Message
from p2p.resilience.token_bucket import TokenBucket

MAX_TRACKED = 4096      # neighbours or origins remembered per budget (least recently used forgotten)
SHOWN = 20              # of them /status names per type and role
ACTIVE_SECONDS = 10.0   # a network that handed over a copy this recently has a part of its type's total
UNKNOWN_NETWORK = "unknown"     # neighbours whose network we cannot tell (no open link) share one part
PACE_STEP_SECONDS = 0.05        # a pacer lets a twentieth of a second's worth of copies through at once ...
PACE_QUEUE_SECONDS = 1.0        # ... and holds at most a second's worth waiting (more are dropped)

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class OpenTypeRule:
    """Copies per second (and at once) one neighbour may hand over, and one origin may author; the largest copy
    (encoded bytes) the type ever needs."""

    per_neighbour: float
    per_origin: float
    max_bytes: int
    total: float = float("inf")     # copies per second from all neighbours together, shared by network

    def burst(self, rate: float) -> float:
        return max(1.0, 4 * rate)

    def start(self, rate: float) -> float:
        """What a neighbour or origin new to us starts with: one second's worth."""
        return max(1.0, rate)


class _Buckets:
    """Token buckets by key, the least recently used forgotten past `MAX_TRACKED`, and how much each key had
    refused (as many keys kept). A new (or forgotten) key's bucket starts with `initial` tokens (default: full)
    and earns the rest of its burst by waiting."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float], initial: float | None = None) -> None:
        self.rate, self.burst, self.clock, self.initial = rate, burst, clock, initial
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused: OrderedDict[str, int] = OrderedDict()

    def peek(self, key: str, n: float = 1.0) -> bool:
        """Whether `take(key, n)` would succeed now (nothing is taken)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return (self.burst if self.initial is None else self.initial) >= n
        return bucket.tokens >= n

    def take(self, key: str, n: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, clock=self.clock, initial=self.initial)
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.try_take(n):
            return True
        self.refused[key] = self.refused.pop(key, 0) + 1
        if len(self.refused) > MAX_TRACKED:
            self.refused.popitem(last=False)
        return False

    def retune(self, key: str, rate: float, burst: float, initial: float) -> None:
        """`key`'s bucket refills at `rate` up to `burst` from now (tokens earned so far kept, within the new
        burst); a key new to us gets a bucket holding `initial`."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = TokenBucket(rate, burst, clock=self.clock, initial=initial)
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        elif bucket.rate != rate:
            bucket.set_rate(rate, burst)

    def over(self) -> list[str]:
        """Keys whose bucket is empty now (who is being throttled)."""
        return [key for key, bucket in self._buckets.items() if bucket.tokens < 1.0]

    def most_refused(self, top: int) -> dict[str, int]:
        return dict(sorted(self.refused.items(), key=lambda item: item[1], reverse=True)[:top])


class NetworkShares:
    """One type's `total` copies a second, shared equally by the networks whose neighbours handed one over within
    ACTIVE_SECONDS and still hold a link: each network's bucket refills at its part, in bursts of at most a
    second's worth of it; a network new to us starts with a tenth of a second's worth (a fraction of one copy when
    parts are small: it earns the first by waiting). A quiet network keeps its own part whoever fills the rest; a
    network gives its part back when its last link closes (`forget`), or after ACTIVE_SECONDS without a copy, so
    keys and addresses that link, send once and leave dilute nobody for long. Each newcomer starts from its part
    as it arrives, so a crowd of networks arriving one by one holds at most a tenth of a second of the total times
    the harmonic number of its size at once, and one coming back after waiting a second's worth times that: the
    size being the networks linked at once, bounded by the links a node keeps."""

    def __init__(self, total: float, clock: Callable[[], float]) -> None:
        self.total, self.clock = total, clock
        self._heard: OrderedDict[str, float] = OrderedDict()      # network -> its last copy, oldest first
        self._members: dict[str, set[str]] = {}                   # network -> its neighbours heard, linked
        self._network_of: dict[str, str] = {}                     # neighbour -> the network it was heard from
        self.buckets = _Buckets(total, max(1.0, total), clock, initial=total / 10)

    def part(self, network: str, neighbour: str) -> float:
        """The copies a second `network` may hand over now, counting it (and `neighbour` in it) among those
        sending."""
        now = self.clock()
        self._heard.pop(network, None)
        self._heard[network] = now
        was = self._network_of.get(neighbour)
        if was != network:
            if was is not None:
                self._leave(was, neighbour)
            self._network_of[neighbour] = network
            self._members.setdefault(network, set()).add(neighbour)
        horizon = now - ACTIVE_SECONDS
        while next(iter(self._heard.values())) < horizon or len(self._heard) > MAX_TRACKED:
            gone, _ = self._heard.popitem(last=False)
            for member in self._members.pop(gone, ()):
                self._network_of.pop(member, None)
        return self.total / len(self._heard)

    def _leave(self, network: str, neighbour: str) -> None:
        members = self._members.get(network)
        if members is None:
            return
        members.discard(neighbour)
        if not members:
            del self._members[network]
            self._heard.pop(network, None)

    def forget(self, neighbour: str) -> None:
        """`neighbour`'s link closed: it no longer counts in its network, and a network left with none sending
        gives its part back (its bucket stays, for when it is back)."""
        network = self._network_of.pop(neighbour, None)
        if network is not None:
            self._leave(network, neighbour)

    def take(self, network: str, neighbour: str) -> bool:
        if self.total == float("inf"):
            return True
        part = self.part(network, neighbour)
        self.buckets.retune(network, part, max(1.0, part), initial=part / 10)
        return self.buckets.take(network)

    def sending(self) -> int:
        """Networks holding a part now."""
        horizon = self.clock() - ACTIVE_SECONDS
        return sum(1 for heard in self._heard.values() if heard >= horizon)


class OpenTypeBudgets:
    """Per-type buckets for the broadcast types anyone may originate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_neighbour: dict[str, _Buckets] = {}
        self._by_origin: dict[str, _Buckets] = {}
        self._by_network: dict[str, NetworkShares] = {}
        self._max_bytes: dict[str, int] = {}

    def limit(self, kind: str, rule: OpenTypeRule) -> None:
        # a neighbour or origin new to us starts with one second's worth and earns its burst by waiting: a fresh
        # link or key costs nothing, and each one starting with four seconds' worth made every node verify and
        # forward that much of a flood at its start
        self._by_neighbour[kind] = _Buckets(rule.per_neighbour, rule.burst(rule.per_neighbour), self.clock,
                                            initial=rule.start(rule.per_neighbour))
        self._by_origin[kind] = _Buckets(rule.per_origin, rule.burst(rule.per_origin), self.clock,
                                         initial=rule.start(rule.per_origin))
        self._by_network[kind] = NetworkShares(rule.total, self.clock)
        self._max_bytes[kind] = rule.max_bytes

    def refusal(self, kind: str, neighbour: str, origin: str, message: Message,
                network: str | None = None) -> str | None:
        """Why a copy of `kind` handed over by `neighbour` (whose link comes from `network`: its /24 or /48, None
        if unknown) and authored by `origin` is dropped, or None."""
        by_neighbour = self._by_neighbour.get(kind)
        if by_neighbour is None:
            return None
        if len(encode_body(message)) > self._max_bytes[kind]:
            return "oversized_open_type"
        if not by_neighbour.take(neighbour):
            return "neighbour_budget"
        if not self._by_network[kind].take(network or UNKNOWN_NETWORK, neighbour):
            return "network_budget"
        if not self._by_origin[kind].take(origin):
            return "origin_budget"
        return None

    def _roles(self, kind: str) -> dict[str, _Buckets]:
        return {"neighbours": self._by_neighbour[kind], "networks": self._by_network[kind].buckets,
                "origins": self._by_origin[kind]}

    def throttled(self) -> dict[str, dict[str, list[str]]]:
        """For /status: per type, the neighbours, networks and origins whose budget is spent now."""
        out: dict[str, dict[str, list[str]]] = {}
        for kind in self._by_neighbour:
            over = {role: buckets.over()[:SHOWN] for role, buckets in self._roles(kind).items()}
            if any(over.values()):
                out[kind] = over
        return out

    def refused(self) -> dict[str, dict[str, dict[str, int]]]:
        """For /status: per type, the neighbours, networks and origins that had the most copies dropped over their
        budget since the start (whoever flooded a minute ago, not only who is over it now), with how many."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for kind in self._by_neighbour:
            most = {role: buckets.most_refused(SHOWN) for role, buckets in self._roles(kind).items()}
            if any(most.values()):
                out[kind] = most
        return out

    def forget(self, neighbour: str) -> None:
        """`neighbour`'s link closed: its network's part is shared among the networks still sending."""
        for shares in self._by_network.values():
            shares.forget(neighbour)

    def networks_sending(self) -> dict[str, int]:
        """For /status: per type, how many networks hold a part of its total now."""
        return {kind: shares.sending() for kind, shares in self._by_network.items()}


class Admission(NamedTuple, Generic[Item]):
    """What a pacer did with an item: `verdict` True (check it now), False (it waits its turn) or None (dropped:
    the queue is full and its sender already has the most waiting); `evicted`, a waiting item of the sender with
    the most waiting that gave up its place to it, or None."""
    verdict: bool | None
    evicted: Item | None = None


class Pacer(Generic[Item]):
    """Items (copies to check) let through at `rate` a second, a twentieth of a second's worth at once; the rest
    wait, at most a second's worth (PACE_QUEUE_SECONDS). Each sender (a network's part, as the budgets count them)
    waits in a queue of its own and the queues take turns, one item each, so a network bursting within its part
    cannot put a second's worth ahead of another's copy; when the queues are full, the sender with the most
    waiting gives up its newest, never the newcomer. Sans-I/O: the caller takes `due()` items when `wait()`
    says."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        step = max(1.0, rate * PACE_STEP_SECONDS)
        self._bucket = TokenBucket(rate, step, clock=clock, initial=step)
        self._queues: dict[str, deque[Item]] = {}
        self._turns: deque[str] = deque()       # senders with items waiting, whose turn is next first
        self._newest: dict[str, int] = {}       # sender -> when (in arrivals) its newest waiting item came
        self._arrivals = 0
        self._waiting = 0
        self.room = max(1, int(rate * PACE_QUEUE_SECONDS))

    def admit(self, item: Item, sender: str) -> Admission[Item]:
        if not self._waiting and self._bucket.try_take():
            return Admission(True)
        evicted: Item | None = None
        if self._waiting >= self.room:
            # of senders with as many waiting, the one whose newest came last: a steady sender's queue, there
            # longest, is not the one a crowd's bursts make give way
            heaviest = max(self._queues, key=lambda who: (len(self._queues[who]), self._newest[who]))
            if len(self._queues.get(sender, ())) >= len(self._queues[heaviest]):
                return Admission(None)
            evicted = self._queues[heaviest].pop()
            self._waiting -= 1
            if not self._queues[heaviest]:      # its only item: it no longer waits, nor takes turns
                self._forget(heaviest)
                self._turns.remove(heaviest)
        queue = self._queues.get(sender)
        if queue is None:
            queue = self._queues[sender] = deque()
            self._turns.append(sender)
        queue.append(item)
        self._arrivals += 1
        self._newest[sender] = self._arrivals
        self._waiting += 1
        return Admission(False, evicted)

    def _forget(self, sender: str) -> None:
        del self._queues[sender]
        del self._newest[sender]

    def due(self) -> list[Item]:
        """The waiting items whose turn has come: one from each sender in turn, each sender's oldest first."""
        out: list[Item] = []
        while self._waiting and self._bucket.try_take():
            sender = self._turns.popleft()
            queue = self._queues[sender]
            out.append(queue.popleft())
            self._waiting -= 1
            if queue:
                self._turns.append(sender)
            else:
                self._forget(sender)
        return out

    def wait(self) -> float | None:
        """Seconds until the next waiting item's turn; None with nothing waiting."""
        return self._bucket.wait_time() if self._waiting else None

    def __len__(self) -> int:
        return self._waiting


class GraftBudget:
    """Bytes of cached broadcasts we re-send on request: `per_peer` bytes/s for each neighbour, `per_network` for
    all the neighbours of one network (/24 or /48: keys are free, so sixteen fresh keys on one network share what
    that network may pull) and `total` bytes/s in all, with bursts of four seconds' worth (never less than one
    `largest` frame, so any message can be repaired)."""

    def __init__(self, per_peer: float, total: float, largest: int,
                 clock: Callable[[], float] = time.monotonic, per_network: float | None = None) -> None:
        per_network = 2 * per_peer if per_network is None else per_network
        self._peers = _Buckets(per_peer, max(4 * per_peer, largest), clock)
        self._networks = _Buckets(per_network, max(4 * per_network, largest), clock)
        self._total = TokenBucket(total, max(4 * total, largest), clock=clock)

    def take(self, peer: str, size: int, network: str | None = None) -> bool:
        """Whether `peer` (of `network`: None, its own) may be sent `size` more bytes now; taken if so."""
        if self._total.tokens < size:
            return False
        if network is not None and not self._networks.peek(network, size):
            return False
        if not self._peers.take(peer, size):
            return False
        if network is not None:
            self._networks.take(network, size)
        return self._total.try_take(size)
