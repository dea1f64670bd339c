"""AdaptiveRouter: which peer serves the next RPC. Pure decision logic: no I/O, no asyncio, time passed in.

Cost of a peer (lower is better), combining the seed's weighted score with load:

    cost = latency ** w.latency
           * (1 + w.error * excess error rate + w.timeout * excess timeout rate)
           * (outstanding + 1) ** w.load
           * hint multiplier (1..2, only without fresh local data)

- latency: peak-EWMA (`PeerMetrics`, errors count as `penalty_latency`), drifting back to the
  neutral prior (lower median latency of known peers) with time constant `w.freshness` when no
  samples arrive, and never below `w.silence` x the current silence (in-flight time with no answer), so a peer that goes
  quiet is avoided after about one normal latency, long before a timeout.
- rates: per-outcome moving averages (weight `alpha`), counted in excess of the fleet's lower median
  plus `error_margin` or twice the averages' noise at that rate, whichever is wider (like Envoy's
  success-rate outlier detection): when every peer fails now and then (a brownout) nobody is
  singled out, while a peer failing more than the rest is pushed away within ~1/alpha outcomes.
  The lower median (sorted[(n - 1) // 2]) is a reference that bad peers cannot shift unless they
  are at least half the fleet. A success after a quiet spell takes at most half off the error
  average, and a probe that brings a peer back restarts its latency, not its error history: a peer
  failing half its requests passes half its probes. They drift back to the reference without fresh
  outcomes. The sliding-window counts are what `snapshot()` reports.

`choose` filters out peers whose circuit breaker refuses (ramping peers pass at their admitted
fraction; a flapping peer just back passes while it has fewer than `flapping_inflight` requests in
flight, see the breaker), peers at their AIMD concurrency limit, and new peers or peers on
probation with a request already in flight; then, in order: a half-open peer's single probe; one
exploratory request to a peer nobody asked for (or that failed) in `probe_interval` seconds (so a
recovered peer is noticed quickly); otherwise power of two random choices by cost among peers that
are not outliers (unloaded cost above `outlier_factor` x the prior, re-evaluated every 100 ms, or
silent for longer than that line allows, checked at every choice: P2C alone would still send a slow
peer traffic whenever both draws land on bad peers, or whenever the others are busy). Outliers get
traffic only when nothing else is admitted. While every provider is at its AIMD limit, cooling
down or being probed, it chooses nobody: the caller waits for an answer or for the first cooldown
to end (`wait_hint`), when that peer gets its probe.

An outlier whose exploration did not come back normal is confirmed: it stays out, on its estimates
as measured (no drift), until an answer within `healed_factor` x the prior (1.5: a healthy peer's
answers straddle the median prior, so 1x kept a healed peer out for several explorations half the
time), and then is on probation, one request at a time, until `new_peer_samples` normal answers in a
row, or more for a peer that was failing (`_probation_length`); a slow answer or a failure sends it
back. Its estimate rests on sparse answers: a 10x slow peer answers within twice the prior
now and then, and each time it was trusted, P2C sent it a burst of slow requests.

Over 500 lines on purpose: the cost, breakers, AIMD limits and ejection decide together on every pick;
their mechanisms live in p2p/resilience/.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypedDict

from p2p.resilience.aimd import AIMDLimit
from p2p.resilience.backoff import Backoff
from p2p.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from p2p.resilience.protection import ENFORCE, SHADOW, Protection
from p2p.resilience.retry_budget import RetryBudget
from p2p.rpc.hints import HEALTHY, HintBook, HintEmitter, HintPayload, HintSummary, parse_hint
from p2p.rpc.metrics import PeerMetrics, outcome_histograms

_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
TransitionLog = Callable[[str, BreakerState, BreakerState, str], None]


@dataclass(frozen=True)
class RouterWeights:
    latency: float = 1.0     # exponent on the latency estimate
    error: float = 10.0      # cost x (1 + error * windowed error rate + timeout * timeout rate)
    timeout: float = 20.0
    freshness: float = 10.0  # s: time constant for a stale estimate drifting back to the prior
    silence: float = 2.0     # latency is at least this x the time in-flight requests went unanswered
    load: float = 1.0        # exponent on (outstanding + 1)


@dataclass(frozen=True)
class RouterConfig:
    weights: RouterWeights = field(default_factory=RouterWeights)
    tau: float = 1.0                   # peak-EWMA decay time (s)
    penalty_latency: float = 0.25      # a failure counts as at least this latency (s)
    window: float = 5.0                # outcome-count window (s) reported by snapshot()
    min_volume: int = 10               # outcomes in the window before its rates count
    alpha: float = 0.05                # weight of one outcome in the error / timeout averages
    error_margin: float = 0.1          # failure rates this far above the fleet reference cost nothing
    default_latency: float = 0.05      # prior (s) while no peer has a sample
    probe_interval: float = 1.0        # s without a request before a peer gets an exploratory one,
    probe_interval_max: float = 3.0    # doubling up to this while the peer stays an outlier
    outlier_factor: float = 2.0        # unloaded cost above this x the prior: only probes, no P2C
    healed_factor: float = 1.5         # an outlier's exploratory answer within this x the prior brings it back
    new_peer_samples: int = 3          # a peer with fewer samples gets one request at a time
    probation_luck: float = 0.01       # odds that a peer still failing at its worst rate passes probation
    fresh_samples: int = 10            # this many outcomes in `fresh_window` s make hints irrelevant
    fresh_window: float = 2.0
    concurrency_limits: bool = True    # per-peer AIMD limit on requests in flight
    aimd_initial: float = 32.0
    aimd_max: float = 1024.0
    aimd_target_latency: float = 0.25
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    max_ejected: float = 0.5           # at most this fraction of known peers with a breaker not closed
    hints: bool = True                 # apply received hints (they are still stored when False)


class PeerRouteView(TypedDict):
    """One peer's row in `GET /routing`."""
    score: float                   # cost in ms-equivalents, lower is better
    latency_ms: float
    error_rate: float
    timeout_rate: float
    outstanding: int
    requests_in_window: int
    breaker: str
    breaker_trips: int
    admission: float
    concurrency_limit: int | None
    last_seen: float | None
    hint: HintSummary | None
    hint_multiplier: float


class _Peer:
    __slots__ = ("name", "metrics", "breaker", "limit", "last_tried", "explore_every", "probation", "suspect")

    def __init__(self, name: str, metrics: PeerMetrics, breaker: CircuitBreaker, limit: AIMDLimit | None) -> None:
        self.name = name
        self.metrics = metrics
        self.breaker = breaker
        self.limit = limit
        self.last_tried = -math.inf
        self.explore_every = 0.0   # current exploration interval (0: the configured base)
        self.probation = 0         # normal answers still owed, one request at a time, after healing
        self.suspect = 0.0         # worst error average since it last passed probation


class AdaptiveRouter:
    """Per-peer state and the choice of peer. Report every request: `on_start` when it is sent,
    then exactly one of `on_success` / `on_failure` (or `cancel` if `choose` was not followed by a send).
    """

    def __init__(self, config: RouterConfig | None = None, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, hint_book: HintBook | None = None,
                 on_transition: Optional[TransitionLog] = None, protection: Protection | None = None,
                 path_costs: Mapping[str, float] | None = None) -> None:
        self.config = config or RouterConfig()
        # cost multipliers by peer for the path a request takes (a link through a relay costs more than its
        # measured latency says: the relay's bandwidth and limits are shared); absent peers cost 1
        self.path_costs: Mapping[str, float] = path_costs if path_costs is not None else {}
        self.protection = protection
        self.rng = rng or random.Random()
        self.clock = clock
        self.hints = hint_book if hint_book is not None else HintBook()   # an empty book is falsy
        self.on_transition = on_transition
        self._peers: dict[str, _Peer] = {}
        self._prior = self.config.default_latency
        self._baseline = (0.0, 0.0)
        self._free = (self.config.error_margin, self.config.error_margin)
        self._outliers: set[_Peer] = set()
        self._prior_at = -math.inf
        self._silent_after = math.inf   # cached with the prior: see `_silence_limit`
        self.latency = outcome_histograms()   # attempt latency per outcome, every peer of this router

    # -- peers ---------------------------------------------------------------------------------
    def _add(self, name: str, now: float) -> _Peer:
        c = self.config
        log = self.on_transition
        callback = None if log is None else (lambda old, new, why, _n=name: log(_n, old, new, why))
        peer = _Peer(
            name,
            PeerMetrics(tau=c.tau, penalty_latency=c.penalty_latency, window=c.window,
                        fresh_window=c.fresh_window, alpha=c.alpha, now=now, histograms=self.latency),
            CircuitBreaker(c.breaker, rng=self.rng, on_transition=callback, now=now, may_trip=self._may_eject),
            AIMDLimit(c.aimd_initial, max_limit=c.aimd_max, target_latency=c.aimd_target_latency, cooldown=c.tau)
            if c.concurrency_limits else None,
        )
        self._peers[name] = peer
        return peer

    def _peer(self, name: str, now: float) -> _Peer:
        return self._peers.get(name) or self._add(name, now)

    def _may_eject(self) -> bool:
        """Whether one more breaker may open: at most `max_ejected` of known peers at a time."""
        ejected = sum(1 for p in self._peers.values() if p.breaker.state is not _CLOSED)
        return ejected + 1 <= max(1, int(self.config.max_ejected * len(self._peers)))

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
        """Neutral latency for a peer without data: the fleet's reference latency (cached 100 ms).

        The reference levels (latency prior, error and timeout baselines) are *lower* medians of the
        known peers' estimates: sorted[(n - 1) // 2]. The plain median of an even fleet averages in
        the upper middle value, so 2 bad peers of 4 (a slow one and a failing one, after a third left)
        pulled it up to between healthy and bad: a 10x slow peer then sat under the outlier line and a
        fast-failing peer's fast answers looked normal. The lower median moves only when at least half
        of the fleet is worse."""
        if now - self._prior_at >= 0.1 or now < self._prior_at:
            known = [p.metrics for p in self._peers.values() if p.metrics.ewma is not None]
            if known:
                mid = (len(known) - 1) // 2
                self._prior = sorted([m.ewma for m in known if m.ewma is not None])[mid]
                self._baseline = (sorted([m.errors for m in known])[mid],
                                  sorted([m.timeouts for m in known])[mid])
            else:
                self._prior = self.config.default_latency
                self._baseline = (0.0, 0.0)
            self._free = (self._free_up_to(self._baseline[0]), self._free_up_to(self._baseline[1]))
            self._prior_at = now
            self._silent_after = self._silence_limit(self._prior)
            self._outliers = self._find_outliers(now)
        return self._prior

    def _find_outliers(self, now: float) -> set[_Peer]:
        """Peers whose unloaded cost is above `outlier_factor` x the prior.

        A confirmed outlier (explored while an outlier, and no exploration came back normal since)
        stays one until its cost as last measured, without the drift back to the prior, is within
        `healed_factor` x the prior: a hysteresis, in practice until an exploration comes back
        normal (then `_on_probation`). Otherwise a
        10x slow peer's estimate, about its last sparse answer, dipped under the entry line after a
        lucky fast answer or a few seconds of drift, and P2C sent it a burst of slow requests before
        its answers pushed it out again. A peer out on one slow answer is not held: at high load,
        holding healthy peers out until explored cascaded (fewer peers, longer queues, more out)."""
        c = self.config
        prior = self._prior
        old = self._outliers
        enter, leave = c.outlier_factor * prior, c.healed_factor * prior
        out = set()
        for p in self._peers.values():
            held = p in old and p.explore_every > 0.0
            if self._cost(p, now, prior, held=held) > (leave if held else enter) * (p.metrics.outstanding + 1):
                out.add(p)
            elif held:
                self._on_probation(p)
        return out

    def _on_probation(self, p: _Peer) -> None:
        """A confirmed outlier looks normal again (an exploration, or the prior rising past its
        estimate): one request at a time until `new_peer_samples` answers in a row come back normal.
        Its estimate rests on one sparse answer, and a 10x slow peer answers within the prior now
        and then (lognormal luck): trusted at once, P2C sent it a burst before its slow answers came
        back. A healed peer answers quickly and is through in a few round trips."""
        p.explore_every = 0.0
        p.probation = self._probation_length(p)

    def _probation_length(self, p: _Peer) -> int:
        """`new_peer_samples`, or more for a peer that was failing: enough answers in a row that a
        peer still failing at its worst measured rate passes with at most `probation_luck` odds.
        Its error average is no guide here: explorations a second apart each take up to half of it
        off, so a peer failing half its requests looked healed after two lucky ones and passed
        three more by chance one time in eight, and got a burst each time. A healed peer pays a
        few dozen quick answers, one at a time."""
        c = self.config
        worst = p.suspect
        if worst <= self._free[0] or worst >= 1.0:
            return c.new_peer_samples
        return max(c.new_peer_samples, math.ceil(math.log(c.probation_luck) / math.log(1.0 - worst)))

    def _free_up_to(self, base: float) -> float:
        """The failure average at or below which a peer pays nothing: the reference rate plus
        `error_margin`, or plus twice the moving average's own noise at that rate (standard deviation
        sqrt(alpha / (2 - alpha) * b * (1 - b))) when that is wider, so in a brownout where every peer
        fails at rate b, the unlucky half of the fleet is not singled out for noise."""
        c = self.config
        a = c.alpha
        noise = 2.0 * math.sqrt(max(0.0, a / (2.0 - a) * base * (1.0 - base)))
        return base + max(c.error_margin, noise)

    def _fresh(self, peer: _Peer, now: float) -> bool:
        return peer.metrics.fresh_count(now) >= self.config.fresh_samples

    def hint_multiplier(self, peer: str, now: float) -> float:
        p = self._peers.get(peer)
        if p is None or not self.config.hints or peer not in self.hints or self._fresh(p, now):
            return 1.0
        return self.hints.multiplier(peer, now)

    def _cost(self, p: _Peer, now: float, prior: float, held: bool = False) -> float:
        """`held`: without the drift of stale estimates back to the prior (see `_find_outliers`)."""
        # Hot path (twice per P2C choice): PeerMetrics.latency / failure_rates inlined, same values.
        c = self.config
        w = c.weights
        m = p.metrics
        est = m.ewma
        age = 0.0 if held else now - m.stamp
        if est is None:
            est = prior
        elif age > 0.0 and w.freshness > 0.0:
            est = prior + (est - prior) * math.exp(-age / w.freshness)
        outstanding = m.outstanding
        if outstanding > 0:
            quiet = (now - m.last_progress) * w.silence
            if quiet > est:
                est = quiet
        cost = est if w.latency == 1.0 else est ** w.latency
        free_err, free_to = self._free
        # Drifting towards the baseline never lifts a rate above max(rate, baseline): a rate at most
        # baseline + margin costs nothing, drift or not.
        if m.errors > free_err or m.timeouts > free_to:
            err, to = m.failure_rates(now, self._baseline, 0.0 if held else w.freshness)
            err -= free_err
            to -= free_to
            if err > 0.0 or to > 0.0:
                cost *= 1.0 + w.error * max(0.0, err) + w.timeout * max(0.0, to)
        load = outstanding + 1
        cost *= load if w.load == 1.0 else load ** w.load
        if c.hints and p.name in self.hints and not m.fresh_count(now) >= c.fresh_samples:
            cost *= self.hints.multiplier(p.name, now)
        if self.path_costs:
            cost *= self.path_costs.get(p.name, 1.0)
        return cost

    def cost(self, peer: str, now: float) -> float:
        return self._cost(self._peer(peer, now), now, self.prior(now))

    # -- choice --------------------------------------------------------------------------------
    def choose(self, candidates: Sequence[str], now: float, exclude: Iterable[str] = frozenset(),
               start: bool = False, guard: str | None = ENFORCE) -> str | None:
        """The peer for the next request among `candidates` (minus `exclude`, e.g. peers already
        tried for this request), or None when there is none. May take a half-open probe slot: if the
        request is not sent after all, call `cancel(peer, now)`. With `start` the request counts as
        sent at once (`on_start` done; if it is not sent after all, call `on_abandon`). `guard` is
        the request's storm protection verdict (Protection.covers): breakers and AIMD limits filter
        peers only when it is ENFORCE. None with candidates left means every one is at its AIMD
        limit, cooling down or has its probe out: see `wait_hint`."""
        c = self.config
        prior = self._prior if 0.0 <= now - self._prior_at < 0.1 else self.prior(now)
        excluded = exclude if isinstance(exclude, (set, frozenset, dict)) else frozenset(exclude)
        if guard != ENFORCE:
            return self._choose_unguarded(candidates, now, excluded, start, guard, prior)
        eligible: list[_Peer] = []
        outliers: list[_Peer] = []
        outlying = self._outliers
        probe: _Peer | None = None
        explore: _Peer | None = None
        peers = self._peers
        closed = _CLOSED
        new_samples = c.new_peer_samples
        interval = c.probe_interval
        use_hints = c.hints
        silent_after = self._silent_after
        for name in candidates:
            if name in excluded:
                continue
            p = peers.get(name) or self._add(name, now)
            b = p.breaker
            cap = None
            if b.state is closed and b.closed_at is None and not b.trips:
                pass                                  # fast path: plainly closed
            elif (cap := b.inflight_cap(now)) is not None:
                pass                                  # a flapping peer just back: gated by `cap` below
            elif not b.admits(now):
                continue
            elif b.state is _HALF_OPEN:
                if probe is None:
                    probe = p
                continue
            m = p.metrics
            outstanding = m.outstanding
            if outstanding:
                if m.samples < new_samples or p.probation:
                    continue
                if p.limit is not None and outstanding >= p.limit.allowed:
                    continue
                if cap is not None and outstanding >= cap:
                    continue
            elif explore is None and now - p.last_tried >= (p.explore_every or interval):
                if (not use_hints or p.last_tried == -math.inf
                        or now - p.last_tried >= (p.explore_every or interval) * self.hint_multiplier(name, now)):
                    explore = p
            if p in outlying or (outstanding and now - m.last_progress > silent_after):
                outliers.append(p)
            else:
                eligible.append(p)
        if explore is not None and probe is None:
            # Probing a peer that still looks bad: wait longer before the next look.
            explore.explore_every = (min(c.probe_interval_max, 2.0 * (explore.explore_every or interval))
                                     if explore in outlying else 0.0)
        chosen = probe or explore
        if chosen is None:
            n = len(eligible)
            if n >= 2:
                chosen = self._two_choices(eligible, now, prior)
            elif n == 1:
                chosen = eligible[0]
            elif outliers:
                chosen = outliers[0] if len(outliers) == 1 else self._two_choices(outliers, now, prior)
            else:
                pool = [peers[name] for name in candidates if name not in excluded]
                if not pool:
                    return None
                chosen = self._fallback(pool, now, prior)
                if chosen is None:
                    return None
        b = chosen.breaker
        if b.state is not closed:
            b.acquire(now)                        # (a closed breaker has no probe slot to take)
        chosen.last_tried = now
        if start:                                 # on_start, inlined
            m = chosen.metrics
            if not m.outstanding:
                m.last_progress = now
            m.outstanding += 1
        return chosen.name

    def _choose_unguarded(self, candidates: Sequence[str], now: float, excluded: Any, start: bool,
                          guard: str | None, prior: float) -> str | None:
        """A request the storm protection does not cover: power of two choices by cost (outliers only
        when nothing else is left), past breakers and AIMD limits; in shadow mode what they would
        have done with the chosen peer is counted."""
        pool = [self._peers.get(name) or self._add(name, now) for name in candidates if name not in excluded]
        if not pool:
            return None
        normal = [p for p in pool if p not in self._outliers] or pool
        chosen = normal[0] if len(normal) == 1 else self._two_choices(normal, now, prior)
        if guard == SHADOW and self.protection is not None:
            m = chosen.metrics
            if chosen.breaker.admission(now) < 1.0:
                self.protection.limited("rpc.breaker", guard, f"breaker {chosen.breaker.state} for {chosen.name[:12]}")
            elif chosen.limit is not None and m.outstanding >= chosen.limit.allowed:
                self.protection.limited("rpc.aimd", guard, f"{m.outstanding} in flight to {chosen.name[:12]}, "
                                                           f"limit {chosen.limit.allowed}")
        chosen.last_tried = now
        if start:
            m = chosen.metrics
            if not m.outstanding:
                m.last_progress = now
            m.outstanding += 1
        return chosen.name

    def _silence_limit(self, prior: float) -> float:
        """Seconds of silence (requests in flight, no answer) that alone make a peer an outlier: its
        estimate, `silence` x that time, is then above the outlier line. Checked at every choice, not
        with the outlier set every 100 ms: a peer that dies mid-stream otherwise kept its P2C share
        for up to that long, and each request sent to it waits for its timeout."""
        w = self.config.weights.silence
        return self.config.outlier_factor * prior / w if w > 0 else math.inf

    def _two_choices(self, eligible: list[_Peer], now: float, prior: float) -> _Peer:
        """Power of two random choices by cost."""
        rnd = self.rng.random
        n = len(eligible)
        i = int(rnd() * n)
        j = int(rnd() * (n - 1))
        if j >= i:
            j += 1
        a, b = eligible[i], eligible[j]
        return a if self._cost(a, now, prior) <= self._cost(b, now, prior) else b

    def _fallback(self, pool: list[_Peer], now: float, prior: float) -> _Peer | None:
        """Nothing is admitted: a closed peer below its concurrency limit (ramping, new, on
        probation) by cost; else None: every provider is at its AIMD limit, cooling down or being
        probed, and the caller waits for an answer or for a cooldown to end (`wait_hint`): a sole
        provider is protected too. Its probe goes out when its cooldown ends."""
        closed = [p for p in pool if p.breaker.state is _CLOSED
                  and (p.limit is None or p.metrics.outstanding < p.limit.allowed)]
        if closed:
            return min(closed, key=lambda p: self._cost(p, now, prior))
        return None

    def wait_hint(self, candidates: Sequence[str], now: float) -> float | None:
        """After `choose` found nobody: seconds until the first candidate's breaker cooldown ends
        (None when none is cooling down: an answer will free a slot)."""
        ends = [p.breaker.open_until - now for name in candidates
                if (p := self._peers.get(name)) is not None and p.breaker.current_state(now) is _OPEN]
        return max(0.0, min(ends)) if ends else None

    # -- outcomes ------------------------------------------------------------------------------
    def on_start(self, peer: str, now: float) -> None:
        """A request to `peer` was sent."""
        p = self._peers.get(peer) or self._add(peer, now)
        p.metrics.on_start(now)
        p.last_tried = now

    def on_success(self, peer: str, latency: float, now: float) -> None:
        p = self._peers.get(peer)
        if p is None:
            return
        breaker = p.breaker
        probing = breaker.state is not _CLOSED
        p.metrics.on_success(latency, now)
        breaker.record_success(now)
        if probing or p.explore_every or p.probation:
            recovered = probing and breaker.state is _CLOSED
            if not recovered and p.explore_every and latency <= self.config.healed_factor * self.prior(now):
                recovered = True            # an outlier's exploratory request came back normal
                self._on_probation(p)
            elif p.probation:
                self._serve_probation(p, latency, now)
            if recovered:
                # The probe proved the peer answers again, and this fast: restart its latency and
                # timeout estimates from this answer (the breaker's ramp or the load term, not stale
                # history, now limits its traffic). Not its error average: one success is weak evidence
                # against a high error rate (a peer failing half its requests passes half its probes),
                # so that only moves by the success's own (capped) weight, already applied above.
                self.prior(now)
                p.metrics.restart(latency, now, self._baseline)
                self._outliers.discard(p)
        limit = p.limit
        # Grow the concurrency limit only while it is in use (at least half of it in flight), as TCP
        # stops growing an application-limited window (RFC 7661): a limit inflated far above any load
        # seen would no longer protect the peer when a burst comes.
        if (limit is not None and latency <= limit.target_latency and limit.limit < limit.max_limit
                and 2 * (p.metrics.outstanding + 1) >= limit.allowed):
            limit.on_success(latency)

    def _serve_probation(self, p: _Peer, latency: float, now: float) -> None:
        """One answer of a peer on probation: a normal one counts down, a slow one is a relapse."""
        if latency <= self.config.outlier_factor * self.prior(now):
            p.probation -= 1
            if not p.probation:
                p.suspect = 0.0
        else:
            self._relapse(p)

    def _relapse(self, p: _Peer) -> None:
        """A peer on probation answered slowly or failed: a confirmed outlier again, explored from
        the base interval."""
        p.probation = 0
        p.explore_every = self.config.probe_interval
        self._outliers.add(p)

    def on_failure(self, peer: str, kind: str, latency: float, now: float) -> None:
        """`kind`: "error" (error answer), "timeout" (no answer in time), "rejected" (peer overloaded)."""
        p = self._peers.get(peer)
        if p is None:
            return
        m = p.metrics
        m.on_failure(kind, latency, now)
        if m.errors > p.suspect:
            p.suspect = m.errors
        p.breaker.record_failure(now, timeout=kind == "timeout", started=now - latency)
        # A failure is fresh news: no exploratory request is owed for another interval. A timeout
        # arrives a whole timeout after its request was sent, and exploring the peer at once (its
        # last request is that old) sent one more request into the same outage.
        p.last_tried = max(p.last_tried, now)
        if p.probation:
            self._relapse(p)
        if p.limit is not None and kind != "error":
            p.limit.on_overload(now)

    def cancel(self, peer: str, now: float) -> None:
        """`choose` returned `peer` but nothing was sent (and `on_start` was not called)."""
        p = self._peers.get(peer)
        if p is not None:
            p.breaker.release(now)

    def on_abandon(self, peer: str, now: float) -> None:
        """A request sent to `peer` was given up by its caller (not the peer's fault): no outcome is
        recorded, it just stops counting as in flight (and gives back a half-open probe slot)."""
        p = self._peers.get(peer)
        if p is not None:
            if p.metrics.outstanding > 0:
                p.metrics.outstanding -= 1
            p.breaker.release(now)

    # -- hints ---------------------------------------------------------------------------------
    def on_hint(self, payload: Mapping[str, object], origin: str, now: float) -> bool:
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

    def emit_hints(self, emitter: HintEmitter, now: float) -> list[HintPayload]:
        """Payloads `emitter` wants broadcast about the peers we have data on."""
        prior = self.prior(now)
        out = []
        for name, p in self._peers.items():
            m = p.metrics
            if m.ewma is None or not self._fresh(p, now):
                continue
            latency = m.latency(now, prior, self.config.weights.freshness)
            volume = self.config.min_volume
            errors = 1.0 - m.rate("success", now, volume) if m.window.total(now) >= volume else 0.0
            payload = emitter.observe(name, latency * 1000.0, errors, now, prior * 1000.0)
            if payload is not None:
                out.append(payload)
        return out

    # -- observability -------------------------------------------------------------------------
    def snapshot(self, now: float | None = None) -> dict[str, PeerRouteView]:
        """Per-peer view for `GET /routing` (score = cost in ms-equivalents, lower is better)."""
        now = self.clock() if now is None else now
        prior = self.prior(now)
        out: dict[str, PeerRouteView] = {}
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
                 clock: Callable[[], float] = time.monotonic, protection: Protection | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.protection = protection
        self.budget = budget if budget is not None else RetryBudget(clock=clock)
        self._backoff = Backoff(base, cap, factor, rng or random.Random())

    def on_request(self) -> None:
        self.budget.record_request()

    def next_retry_delay(self, attempt: int, kind: str = "error", guard: str | None = ENFORCE) -> float | None:
        """`guard`: the request's storm protection verdict; the budget binds only when it is ENFORCE."""
        if attempt >= self.max_attempts or kind not in self.RETRYABLE:
            return None
        if guard is not None and not self.budget.try_retry():
            if self.protection is None or self.protection.limited("rpc.retry_budget", guard, "retry budget spent"):
                return None
        return self._backoff.delay_for(attempt - 1)
