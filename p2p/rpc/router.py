"""AdaptiveRouter: which peer serves the next RPC. Pure decision logic: no I/O, no asyncio, time passed in.

Cost of a peer (lower is better), combining the seed's weighted score with load:

    cost = latency ** w.latency
           * (1 + w.error * error_rate + w.timeout * timeout_rate)
           * (outstanding + 1) ** w.load
           * hint multiplier (1..2, only without fresh local data)

- latency: peak-EWMA (`PeerMetrics`, errors count as `penalty_latency`), drifting back to the
  neutral prior (median latency of known peers) with time constant `w.freshness` when no samples
  arrive, and never below the current silence (in-flight time with no answer), so a peer that goes
  quiet is avoided after about one normal latency, long before a timeout.
- rates: over a sliding window, counted only once the window holds `min_volume` outcomes.

`choose` filters out peers whose circuit breaker refuses (ramping peers pass at their admitted
fraction), peers at their AIMD concurrency limit and new peers with a request already in flight;
then, in order: a half-open peer's single probe; one exploratory request to a peer nobody asked for
`probe_interval` seconds (so a recovered peer is noticed quickly); otherwise power of two random
choices by cost. If every breaker is open it probes the peer open longest: never a dead end.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from p2p.resilience.aimd import AIMDLimit
from p2p.resilience.backoff import Backoff
from p2p.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from p2p.resilience.retry_budget import RetryBudget
from p2p.rpc.hints import HEALTHY, HintBook, HintEmitter, parse_hint
from p2p.rpc.metrics import PeerMetrics

TransitionLog = Callable[[str, BreakerState, BreakerState, str], None]


@dataclass(frozen=True)
class RouterWeights:
    latency: float = 1.0     # exponent on the latency estimate
    error: float = 4.0       # cost x (1 + error * windowed error rate)
    timeout: float = 8.0     # cost x (1 + timeout * windowed timeout rate)
    freshness: float = 3.0   # s: time constant for a stale estimate drifting back to the prior
    load: float = 1.0        # exponent on (outstanding + 1)


@dataclass(frozen=True)
class RouterConfig:
    weights: RouterWeights = field(default_factory=RouterWeights)
    tau: float = 1.0                   # peak-EWMA decay time (s)
    penalty_latency: float = 0.25      # a failure counts as at least this latency (s)
    window: float = 5.0                # outcome-rate window (s)
    min_volume: int = 10               # outcomes in the window before its rates count
    default_latency: float = 0.05      # prior (s) while no peer has a sample
    probe_interval: float = 1.0        # s without a request before a peer gets an exploratory one
    p2c_rounds: int = 3                # pairs drawn at most when both of a pair look like outliers
    outlier_factor: float = 3.0        # ... i.e. unloaded cost above this x the prior
    new_peer_samples: int = 3          # a peer with fewer samples gets one request at a time
    fresh_samples: int = 10            # this many outcomes in `fresh_window` s make hints irrelevant
    fresh_window: float = 2.0
    concurrency_limits: bool = True    # per-peer AIMD limit on requests in flight
    aimd_initial: float = 32.0
    aimd_max: float = 1024.0
    aimd_target_latency: float = 0.25
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    hints: bool = True                 # apply received hints (they are still stored when False)


class _Peer:
    __slots__ = ("name", "metrics", "breaker", "limit", "last_tried")

    def __init__(self, name: str, metrics: PeerMetrics, breaker: CircuitBreaker, limit: AIMDLimit | None) -> None:
        self.name = name
        self.metrics = metrics
        self.breaker = breaker
        self.limit = limit
        self.last_tried = -math.inf


class AdaptiveRouter:
    """Per-peer state and the choice of peer. Report every request: `on_start` when it is sent,
    then exactly one of `on_success` / `on_failure` (or `cancel` if `choose` was not followed by a send).
    """

    def __init__(self, config: RouterConfig | None = None, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, hint_book: HintBook | None = None,
                 on_transition: Optional[TransitionLog] = None) -> None:
        self.config = config or RouterConfig()
        self.rng = rng or random.Random()
        self.clock = clock
        self.hints = hint_book or HintBook()
        self.on_transition = on_transition
        self._peers: dict[str, _Peer] = {}
        self._prior = self.config.default_latency
        self._prior_at = -math.inf

    # -- peers ---------------------------------------------------------------------------------
    def _add(self, name: str, now: float) -> _Peer:
        c = self.config
        log = self.on_transition
        callback = None if log is None else (lambda old, new, why, _n=name: log(_n, old, new, why))
        peer = _Peer(
            name,
            PeerMetrics(tau=c.tau, penalty_latency=c.penalty_latency, window=c.window,
                        fresh_window=c.fresh_window, now=now),
            CircuitBreaker(c.breaker, rng=self.rng, on_transition=callback, now=now),
            AIMDLimit(c.aimd_initial, max_limit=c.aimd_max, target_latency=c.aimd_target_latency, cooldown=c.tau)
            if c.concurrency_limits else None,
        )
        self._peers[name] = peer
        return peer

    def _peer(self, name: str, now: float) -> _Peer:
        return self._peers.get(name) or self._add(name, now)

    def forget(self, peer: str) -> None:
        """Drop all state about a peer (it left, or no longer offers the service)."""
        self._peers.pop(peer, None)
        self.hints.forget(peer)

    def __contains__(self, peer: str) -> bool:
        return peer in self._peers

    def peers(self) -> list[str]:
        return list(self._peers)

    # -- scoring -------------------------------------------------------------------------------
    def prior(self, now: float) -> float:
        """Neutral latency for a peer without data: median of known peers' estimates (cached 100 ms)."""
        if now - self._prior_at >= 0.1 or now < self._prior_at:
            known = [p.metrics.ewma for p in self._peers.values() if p.metrics.ewma is not None]
            self._prior = statistics.median(known) if known else self.config.default_latency
            self._prior_at = now
        return self._prior

    def _fresh(self, peer: _Peer, now: float) -> bool:
        return peer.metrics.fresh_count(now) >= self.config.fresh_samples

    def hint_multiplier(self, peer: str, now: float) -> float:
        p = self._peers.get(peer)
        if p is None or not self.config.hints or self._fresh(p, now):
            return 1.0
        return self.hints.multiplier(peer, now)

    def _cost(self, p: _Peer, now: float, prior: float) -> float:
        c = self.config
        w = c.weights
        m = p.metrics
        cost = m.latency(now, prior, w.freshness)
        if w.latency != 1.0:
            cost = cost ** w.latency
        counts = m.window.counts(now)
        total = counts["success"] + counts["error"] + counts["timeout"] + counts["rejected"]
        if total >= c.min_volume:
            cost *= 1.0 + (w.error * (counts["error"] + counts["rejected"]) + w.timeout * counts["timeout"]) / total
        load = m.outstanding + 1
        cost *= load if w.load == 1.0 else load ** w.load
        if c.hints:
            cost *= self.hint_multiplier(p.name, now)
        return cost

    def cost(self, peer: str, now: float) -> float:
        return self._cost(self._peer(peer, now), now, self.prior(now))

    # -- choice --------------------------------------------------------------------------------
    def choose(self, candidates: Sequence[str], now: float, exclude: Iterable[str] = ()) -> str | None:
        """The peer for the next request among `candidates` (minus `exclude`, e.g. peers already
        tried for this request), or None when there is none. May take a half-open probe slot: if the
        request is not sent after all, call `cancel(peer, now)`."""
        c = self.config
        prior = self.prior(now)
        excluded = exclude if isinstance(exclude, (set, frozenset, dict)) else set(exclude)
        eligible: list[_Peer] = []
        pool: list[_Peer] = []
        probe: _Peer | None = None
        explore: _Peer | None = None
        for name in candidates:
            if name in excluded:
                continue
            p = self._peers.get(name) or self._add(name, now)
            pool.append(p)
            b = p.breaker
            if not b.admits(now):
                continue
            m = p.metrics
            if m.samples < c.new_peer_samples and m.outstanding > 0:
                continue
            if p.limit is not None and m.outstanding >= p.limit.allowed:
                continue
            if b.state is BreakerState.HALF_OPEN:
                if probe is None:
                    probe = p
                continue
            if explore is None and m.outstanding == 0:
                interval = c.probe_interval
                if c.hints and p.last_tried > -math.inf:
                    interval *= self.hint_multiplier(name, now)
                if now - p.last_tried >= interval:
                    explore = p
            eligible.append(p)
        chosen = probe or explore
        if chosen is None:
            n = len(eligible)
            if n >= 2:
                chosen = self._two_choices(eligible, now, prior)
            elif n == 1:
                chosen = eligible[0]
            elif pool:
                chosen = self._fallback(pool, now, prior)
            else:
                return None
        chosen.breaker.acquire(now)
        chosen.last_tried = now
        return chosen.name

    def _two_choices(self, eligible: list[_Peer], now: float, prior: float) -> _Peer:
        """Power of two random choices. If the better of the two still looks like an outlier
        (unloaded cost above `outlier_factor` x the prior; it happens when both draws hit bad peers)
        draw another pair, up to `p2c_rounds` pairs, and keep the best seen."""
        c = self.config
        rng = self.rng
        n = len(eligible)
        limit = c.outlier_factor * prior
        best: _Peer | None = None
        best_cost = math.inf
        for _ in range(c.p2c_rounds):
            i = rng.randrange(n)
            j = rng.randrange(n - 1)
            if j >= i:
                j += 1
            for p in (eligible[i], eligible[j]):
                cost = self._cost(p, now, prior)
                if cost < best_cost:
                    best, best_cost = p, cost
            if best_cost <= limit * (best.metrics.outstanding + 1):  # type: ignore[union-attr]
                break
        return best  # type: ignore[return-value]

    def _fallback(self, pool: list[_Peer], now: float, prior: float) -> _Peer:
        """Nothing is admitted: a closed (ramping or limited) peer by cost, else the peer open longest."""
        closed = [p for p in pool if p.breaker.state is BreakerState.CLOSED]
        if closed:
            return min(closed, key=lambda p: self._cost(p, now, prior))
        return max(pool, key=lambda p: p.breaker.open_for(now))

    # -- outcomes ------------------------------------------------------------------------------
    def on_start(self, peer: str, now: float) -> None:
        """A request to `peer` was sent."""
        p = self._peer(peer, now)
        p.metrics.on_start(now)
        p.last_tried = now

    def on_success(self, peer: str, latency: float, now: float) -> None:
        p = self._peers.get(peer)
        if p is None:
            return
        p.metrics.on_success(latency, now)
        p.breaker.record_success(now)
        if p.limit is not None:
            p.limit.on_success(latency)

    def on_failure(self, peer: str, kind: str, latency: float, now: float) -> None:
        """`kind`: "error" (error answer), "timeout" (no answer in time), "rejected" (peer overloaded)."""
        p = self._peers.get(peer)
        if p is None:
            return
        p.metrics.on_failure(kind, latency, now)
        p.breaker.record_failure(now)
        if p.limit is not None and kind != "error":
            p.limit.on_overload(now)

    def cancel(self, peer: str, now: float) -> None:
        """`choose` returned `peer` but nothing was sent (and `on_start` was not called)."""
        p = self._peers.get(peer)
        if p is not None:
            p.breaker.release(now)

    # -- hints ---------------------------------------------------------------------------------
    def on_hint(self, payload: Mapping[str, Any], origin: str, now: float) -> bool:
        """A verified hint from node `origin`. Only about peers we know; True if it was taken."""
        hint = parse_hint(payload, origin, now)
        if hint is None or hint.subject not in self._peers or hint.subject == origin:
            return False
        if not self.hints.receive(hint):
            return False
        if hint.status == HEALTHY and self.config.hints:
            p = self._peers[hint.subject]
            if not self._fresh(p, now):
                p.last_tried = min(p.last_tried, now - self.config.probe_interval)  # explore it soon
        return True

    def emit_hints(self, emitter: HintEmitter, now: float) -> list[dict[str, Any]]:
        """Payloads `emitter` wants broadcast about the peers we have data on."""
        prior = self.prior(now)
        out = []
        for name, p in self._peers.items():
            m = p.metrics
            if m.ewma is None or not self._fresh(p, now):
                continue
            latency = m.latency(now, prior, self.config.weights.freshness)
            errors = 1.0 - m.rate("success", now, self.config.min_volume) if m.window.total(now) >= self.config.min_volume else 0.0
            payload = emitter.observe(name, latency * 1000.0, errors, now, prior * 1000.0)
            if payload is not None:
                out.append(payload)
        return out

    # -- observability -------------------------------------------------------------------------
    def snapshot(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per-peer view for `GET /routing` (score = cost in ms-equivalents, lower is better)."""
        now = self.clock() if now is None else now
        prior = self.prior(now)
        out = {}
        for name, p in self._peers.items():
            m = p.metrics
            counts = m.counts(now)
            total = sum(counts.values())
            state = p.breaker.current_state(now)
            out[name] = {
                "score": round(self._cost(p, now, prior) * 1000.0, 3),
                "latency_ms": round(m.latency(now, prior, self.config.weights.freshness) * 1000.0, 3),
                "error_rate": round((counts["error"] + counts["rejected"]) / total, 4) if total else 0.0,
                "timeout_rate": round(counts["timeout"] / total, 4) if total else 0.0,
                "outstanding": m.outstanding,
                "requests_in_window": total,
                "breaker": state.value,
                "breaker_trips": p.breaker.total_trips,
                "admission": round(p.breaker.admission(now), 3),
                "concurrency_limit": p.limit.allowed if p.limit is not None else None,
                "last_seen": m.last_seen,
                "hint": self.hints.summary(name, now),
                "hint_multiplier": round(self.hint_multiplier(name, now), 3),
            }
        return out


class RetryPolicy:
    """When to retry a failed request: full-jitter backoff, at most `max_attempts` attempts in all,
    and only while the shared `RetryBudget` allows (retries stay a small fraction of traffic).

    Call `on_request()` for each original request; after a failure, `next_retry_delay(attempts)`
    (attempts made so far, >= 1) returns the delay before the next attempt or None to give up.
    """

    RETRYABLE = frozenset({"error", "timeout", "rejected"})

    def __init__(self, *, max_attempts: int = 3, base: float = 0.01, cap: float = 0.5, factor: float = 2.0,
                 budget: RetryBudget | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.budget = budget if budget is not None else RetryBudget(clock=clock)
        self._backoff = Backoff(base, cap, factor, rng or random.Random())

    def on_request(self) -> None:
        self.budget.record_request()

    def next_retry_delay(self, attempt: int, kind: str = "error") -> float | None:
        if attempt >= self.max_attempts or kind not in self.RETRYABLE:
            return None
        if not self.budget.try_retry():
            return None
        return self._backoff.delay_for(attempt - 1)
