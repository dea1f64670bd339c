"""What a broadcast may cost us, charged to whoever causes it, before any signature is checked.

Two budgets, both per someone with a global cap behind them:

- `OpenTypeBudgets`: a broadcast type any key may originate (an RPC health hint) gets a rate per
  neighbour that hands copies over and per origin key, so one link or one key cannot make the whole
  network verify and forward its copies. Fresh keys are free, so the neighbour's rate is what binds
  a spammer; the origin's rate keeps one loud honest origin from using a relay's whole share. The
  excess is dropped unforwarded and nobody is penalised: the neighbour may be an honest relay. A copy
  larger than its type ever is (fields the signature does not cover, padded to hundreds of kilobytes)
  is dropped first, before it spends a budget or its signature is checked: relayed, every node would
  forward and cache it whole.
- `GraftBudget`: bytes of cached broadcasts re-sent on request, per neighbour and in all. Together
  with serving each id once per neighbour, a few bytes of `graft` can no longer pull megabytes.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from p2p.framing import encode_body
from p2p.messages import Message
from p2p.resilience.token_bucket import TokenBucket

MAX_TRACKED = 4096      # neighbours or origins remembered per budget (least recently used forgotten)
SHOWN = 20              # of them /status names per type and role


@dataclass(frozen=True, slots=True)
class OpenTypeRule:
    """Copies per second (and at once) one neighbour may hand over, and one origin may author; the largest copy
    (encoded bytes) the type ever needs."""

    per_neighbour: float
    per_origin: float
    max_bytes: int

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

    def over(self) -> list[str]:
        """Keys whose bucket is empty now (who is being throttled)."""
        return [key for key, bucket in self._buckets.items() if bucket.tokens < 1.0]

    def most_refused(self, top: int) -> dict[str, int]:
        return dict(sorted(self.refused.items(), key=lambda item: item[1], reverse=True)[:top])


class OpenTypeBudgets:
    """Per-type buckets for the broadcast types anyone may originate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_neighbour: dict[str, _Buckets] = {}
        self._by_origin: dict[str, _Buckets] = {}
        self._max_bytes: dict[str, int] = {}

    def limit(self, kind: str, rule: OpenTypeRule) -> None:
        # a neighbour or origin new to us starts with one second's worth and earns its burst by waiting: a fresh
        # link or key costs nothing, and each one starting with four seconds' worth made every node verify and
        # forward that much of a flood at its start
        self._by_neighbour[kind] = _Buckets(rule.per_neighbour, rule.burst(rule.per_neighbour), self.clock,
                                            initial=rule.start(rule.per_neighbour))
        self._by_origin[kind] = _Buckets(rule.per_origin, rule.burst(rule.per_origin), self.clock,
                                         initial=rule.start(rule.per_origin))
        self._max_bytes[kind] = rule.max_bytes

    def refusal(self, kind: str, neighbour: str, origin: str, message: Message) -> str | None:
        """Why a copy of `kind` handed over by `neighbour` and authored by `origin` is dropped, or None."""
        by_neighbour = self._by_neighbour.get(kind)
        if by_neighbour is None:
            return None
        if len(encode_body(message)) > self._max_bytes[kind]:
            return "oversized_open_type"
        if not by_neighbour.take(neighbour):
            return "neighbour_budget"
        if not self._by_origin[kind].take(origin):
            return "origin_budget"
        return None

    def throttled(self) -> dict[str, dict[str, list[str]]]:
        """For /status: per type, the neighbours and origins whose budget is spent now."""
        out: dict[str, dict[str, list[str]]] = {}
        for kind, by_neighbour in self._by_neighbour.items():
            neighbours, origins = by_neighbour.over(), self._by_origin[kind].over()
            if neighbours or origins:
                out[kind] = {"neighbours": neighbours[:SHOWN], "origins": origins[:SHOWN]}
        return out

    def refused(self) -> dict[str, dict[str, dict[str, int]]]:
        """For /status: per type, the neighbours and origins that had the most copies dropped over their budget
        since the start (whoever flooded a minute ago, not only who is over it now), with how many."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for kind, by_neighbour in self._by_neighbour.items():
            neighbours, origins = by_neighbour.most_refused(SHOWN), self._by_origin[kind].most_refused(SHOWN)
            if neighbours or origins:
                out[kind] = {"neighbours": neighbours, "origins": origins}
        return out


class GraftBudget:
    """Bytes of cached broadcasts we re-send on request: `per_peer` bytes/s for each neighbour and `total` bytes/s
    in all, with bursts of four seconds' worth (never less than one `largest` frame, so any message can be
    repaired)."""

    def __init__(self, per_peer: float, total: float, largest: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._peers = _Buckets(per_peer, max(4 * per_peer, largest), clock)
        self._total = TokenBucket(total, max(4 * total, largest), clock=clock)

    def take(self, peer: str, size: int) -> bool:
        if self._total.tokens < size:
            return False
        if not self._peers.take(peer, size):
            return False
        return self._total.try_take(size)
