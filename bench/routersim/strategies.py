"""Peer-choice strategies compared by the router simulation, all behind one small interface.

`Ours` wraps the real `AdaptiveRouter`; the others are the usual baselines. Every strategy gets the
same calls as a real RPC client would make: choose -> on_start -> on_success | on_failure.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Mapping, Sequence

from p2p.rpc.router import AdaptiveRouter, RouterConfig


class Strategy:
    name = "?"

    def choose(self, candidates: Sequence[str], now: float, exclude: frozenset[str]) -> str | None:
        raise NotImplementedError

    def on_start(self, peer: str, now: float) -> None:
        pass

    def on_success(self, peer: str, latency: float, now: float) -> None:
        pass

    def on_failure(self, peer: str, kind: str, latency: float, now: float) -> None:
        pass

    def on_hint(self, payload: Mapping[str, Any], origin: str, now: float) -> None:
        pass


def _open(candidates: Sequence[str], exclude: frozenset[str]) -> Sequence[str]:
    if not exclude:
        return candidates
    left = [c for c in candidates if c not in exclude]
    return left or candidates


class RandomChoice(Strategy):
    """Uniform random peer (what a Grenache client does with the workers a lookup returns)."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates, now, exclude):
        return self.rng.choice(_open(candidates, exclude))


class RoundRobin(Strategy):
    name = "round robin"

    def __init__(self, rng: random.Random) -> None:
        self.i = 0

    def choose(self, candidates, now, exclude):
        pool = _open(candidates, exclude)
        self.i += 1
        return pool[self.i % len(pool)]


class _Outstanding(Strategy):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pending: dict[str, int] = {}

    def on_start(self, peer, now):
        self.pending[peer] = self.pending.get(peer, 0) + 1

    def _done(self, peer: str) -> None:
        self.pending[peer] -= 1

    def on_success(self, peer, latency, now):
        self._done(peer)

    def on_failure(self, peer, kind, latency, now):
        self._done(peer)


class LeastOutstanding(_Outstanding):
    """Fewest requests in flight from this client, random among ties."""

    name = "least outstanding"

    def choose(self, candidates, now, exclude):
        pool = _open(candidates, exclude)
        best = min(self.pending.get(c, 0) for c in pool)
        return self.rng.choice([c for c in pool if self.pending.get(c, 0) == best])


class _FinagleCost:
    """Finagle's PeakEwma.Cost: peak-sensitive EWMA that also decays towards 0 when read."""

    __slots__ = ("cost", "stamp", "tau")

    def __init__(self, tau: float, now: float) -> None:
        self.cost = 0.0
        self.stamp = now
        self.tau = tau

    def observe(self, rtt: float, now: float) -> None:
        td = max(now - self.stamp, 0.0)
        w = math.exp(-td / self.tau)
        self.cost = rtt if rtt > self.cost else self.cost * w + rtt * (1.0 - w)
        self.stamp = now

    def get(self, now: float) -> float:
        self.observe(0.0, now)
        return self.cost


class P2CPeakEwma(_Outstanding):
    """Finagle / Linkerd anchor: power of two choices over load = peak-EWMA latency x (pending + 1).

    Failures are observed at their real latency (a fast failure looks fast), as in Finagle."""

    name = "P2C+peak-EWMA"
    PENALTY = float(1 << 47)   # Finagle: a peer with pending requests but no cost yet is avoided

    def __init__(self, rng: random.Random, tau: float = 10.0) -> None:
        super().__init__(rng)
        self.tau = tau
        self.costs: dict[str, _FinagleCost] = {}

    def _load(self, peer: str, now: float) -> float:
        c = self.costs.get(peer)
        if c is None:
            c = self.costs[peer] = _FinagleCost(self.tau, now)
        cost = c.get(now)
        pending = self.pending.get(peer, 0)
        if cost == 0.0 and pending:
            return self.PENALTY + pending
        return cost * (pending + 1)

    def choose(self, candidates, now, exclude):
        pool = _open(candidates, exclude)
        if len(pool) == 1:
            return pool[0]
        a, b = self.rng.sample(pool, 2)
        return a if self._load(a, now) <= self._load(b, now) else b

    def on_success(self, peer, latency, now):
        super().on_success(peer, latency, now)
        self.costs[peer].observe(latency, now)

    def on_failure(self, peer, kind, latency, now):
        super().on_failure(peer, kind, latency, now)
        self.costs[peer].observe(latency, now)


class Ours(Strategy):
    """The real `AdaptiveRouter` (p2p/rpc/router.py), with or without gossip hints."""

    def __init__(self, rng: random.Random, *, hints: bool, clock: Callable[[], float],
                 config: RouterConfig | None = None) -> None:
        self.name = "ours+hints" if hints else "ours"
        self.hints = hints
        self.router = AdaptiveRouter(config or RouterConfig(), rng=rng, clock=clock)

    def choose(self, candidates, now, exclude):
        # Nobody admitted (every provider at its AIMD limit or cooling down): a node holds the
        # request until a slot frees; this simulation has no such wait, so it sends by cost.
        return (self.router.choose(candidates, now, exclude) or self.router.choose(candidates, now, exclude, guard=None)
                or candidates[0])

    def on_start(self, peer, now):
        self.router.on_start(peer, now)

    def on_success(self, peer, latency, now):
        self.router.on_success(peer, latency, now)

    def on_failure(self, peer, kind, latency, now):
        self.router.on_failure(peer, kind, latency, now)

    def on_hint(self, payload, origin, now):
        if self.hints:
            self.router.on_hint(payload, origin, now)


class Oracle(Strategy):
    """Knows the truth: never picks a backend that is slow, failing or dead right now, and among
    the rest picks the one whose queue would start this request soonest (random among ties)."""

    name = "oracle"

    def __init__(self, rng: random.Random, truth: Callable[[str, float], tuple[bool, float]]) -> None:
        self.rng = rng
        self.truth = truth   # peer, now -> (healthy, when a worker frees up)

    def choose(self, candidates, now, exclude):
        pool = _open(candidates, exclude)
        best: list[str] = []
        best_start = math.inf
        fallback: list[str] = []
        for c in pool:
            healthy, start = self.truth(c, now)
            if not healthy:
                continue
            fallback.append(c)
            if start < best_start - 1e-12:
                best, best_start = [c], start
            elif abs(start - best_start) <= 1e-12:
                best.append(c)
        if not best:
            return self.rng.choice(list(pool))
        return best[0] if len(best) == 1 else self.rng.choice(best)
