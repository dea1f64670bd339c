"""Circuit breaker: stops traffic to a failing peer, probes it one request at a time, ramps it back gently.

States: CLOSED (traffic flows) -> OPEN (none) -> HALF_OPEN (exactly one probe in flight) -> CLOSED.

- CLOSED -> OPEN after `consecutive_failures` failures in a row (`consecutive_timeouts` when they
  are all timeouts: silence is a stronger signal than an error answer), or when the failure rate over
  a sliding window exceeds `failure_rate` with at least `min_volume` outcomes in it. A flapping peer
  (at least `flapping_trips` trips not yet forgiven) opens on its first timeout. An optional
  `may_trip()` guard can veto that first trip (the router uses it to cap how many peers are ejected
  at once, like Envoy's max_ejection_percent, so a fleet-wide brownout cannot open every breaker).
- OPEN -> HALF_OPEN once the cooldown has elapsed. The cooldown grows with the trips and the failed probes
  of this outage up to a ceiling of min(cap, cooldown_base * factor ** (trips - 1 + failed probes)), of
  which the last `cooldown_jitter` fraction is random (0.5: uniform(ceiling / 2, ceiling)), floored at
  `cooldown_min`; the cap is `outage_cooldown_cap` for a peer in its first outage, `cooldown_cap` for a
  flapping one.
- HALF_OPEN admits one probe; success -> CLOSED with a ramp (the admitted fraction of traffic grows
  linearly from `ramp_start` to 1 over `ramp_period` x min(trips, `ramp_trips`): a peer that keeps
  tripping comes back more slowly), failure -> OPEN with a longer cooldown. A probe
  that never reports within `probe_timeout` counts as failed. A failed probe is the same outage, not
  another trip: a peer down for half a minute and back is one trip (it ramps over one `ramp_period`, its
  probes at most `outage_cooldown_cap` apart), where counting each failed probe as a trip made it a
  flapping peer, probed `cooldown_cap` apart and ramped over `ramp_trips` ramp periods after it healed. A
  flapping peer's first `ramp_period` back is gated by requests in flight instead (`inflight_cap`: one at a
  time by default).
- The trip count is not reset by one success: it drops by one per `decay_period` of uninterrupted
  health, so a flapping peer keeps long cooldowns.

Time is always passed in (`now`); randomness comes from an injectable `random.Random`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional

from p2p.resilience.backoff import Backoff
from p2p.resilience.window import WindowCounter


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:  # log lines read "closed -> open", not "BreakerState.CLOSED"
        return self.value


_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


TransitionCallback = Callable[[BreakerState, BreakerState, str], None]


@dataclass(frozen=True)
class BreakerConfig:
    consecutive_failures: int = 10
    consecutive_timeouts: int = 3
    failure_rate: float = 0.5          # trip when the windowed failure rate exceeds this ...
    min_volume: int = 20               # ... and the window holds at least this many outcomes
    window: float = 5.0                # seconds covered by the failure-rate window
    window_buckets: int = 10
    cooldown_base: float = 0.5         # ceiling of the first cooldown (s)
    cooldown_factor: float = 2.0
    cooldown_cap: float = 3.0          # no cooldown ceiling above this (s) for a flapping peer ...
    outage_cooldown_cap: float = 1.0   # ... nor above this for a peer in its first outage
    cooldown_min: float = 0.05         # full jitter floor, so a probe never follows a trip instantly
    probe_timeout: float = 2.0         # a probe silent for this long counts as failed
    ramp_start: float = 0.25           # admitted fraction right after closing
    ramp_period: float = 2.0           # seconds to ramp back to full traffic (per damped trip ...)
    ramp_trips: int = 5                # ... counting at most this many trips
    decay_period: float = 10.0         # healthy seconds that forgive one trip
    cooldown_jitter: float = 0.5       # random part of the cooldown, as a fraction of its ceiling
    flapping_trips: int = 2            # with this many unforgiven trips, one timeout opens the breaker ...
    flapping_inflight: int = 1         # ... and for its first ramp_period back, at most this many in flight


class CircuitBreaker:
    """One peer's breaker. Call `admits(now)` to ask, `acquire(now)` when sending, then report outcomes."""

    def __init__(self, config: BreakerConfig | None = None, *, rng: random.Random | None = None,
                 on_transition: Optional[TransitionCallback] = None, now: float = 0.0,
                 may_trip: Optional[Callable[[], bool]] = None) -> None:
        self.config = c = config or BreakerConfig()
        self._rng = rng or random.Random()
        self._backoff = Backoff(c.cooldown_base, c.cooldown_cap, c.cooldown_factor, self._rng)
        self.on_transition = on_transition
        self.may_trip = may_trip
        self.state = _CLOSED
        self.trips = 0                      # damped trip count (grows per trip, decays with health)
        self.failed_probes = 0              # in the current outage (each lengthens the cooldown)
        self.total_trips = 0                # never decays: for metrics
        self.consecutive = 0
        self.consecutive_timeouts = 0
        self.vetoed = 0                     # trips the may_trip guard refused
        self.window = WindowCounter(c.window, c.window_buckets, ("ok", "fail"))
        self.opened_at: float | None = None
        self.open_until = 0.0
        self.closed_at: float | None = None  # start of the current ramp (None: no ramp)
        self.healthy_since = now
        self.probe_started: float | None = None

    # -- queries -------------------------------------------------------------------------------
    def current_state(self, now: float) -> BreakerState:
        """State at `now`, moving OPEN -> HALF_OPEN when the cooldown has run out."""
        if self.state is _OPEN and now >= self.open_until:
            self._move(_HALF_OPEN, "cooldown elapsed")
            self.probe_started = None
        elif (self.state is _HALF_OPEN and self.probe_started is not None
              and now - self.probe_started >= self.config.probe_timeout):
            self._reopen(now, "probe timed out")
        return self.state

    def admission(self, now: float) -> float:
        """Fraction of traffic admitted right now: 0 when open or probing, ramping up after closing."""
        state = self.current_state(now)
        if state is _OPEN:
            return 0.0
        if state is _HALF_OPEN:
            return 1.0 if self.probe_started is None else 0.0
        self._decay(now)
        if self.closed_at is None:
            return 1.0
        c = self.config
        period = c.ramp_period * min(max(self.trips, 1), c.ramp_trips)
        progress = (now - self.closed_at) / period if period > 0 else 1.0
        if progress >= 1.0:
            self.closed_at = None
            return 1.0
        return c.ramp_start + (1.0 - c.ramp_start) * max(0.0, progress)

    def admits(self, now: float) -> bool:
        """Whether one request may go now (during a ramp, a random draw at the admitted fraction)."""
        if self.state is _CLOSED and self.closed_at is None:
            if self.trips:
                self._decay(now)
            return True
        fraction = self.admission(now)
        return fraction >= 1.0 or (fraction > 0.0 and self._rng.random() < fraction)

    def flapping(self, now: float) -> bool:
        """Whether the peer has tripped `flapping_trips` times without being forgiven since: it then
        opens on its first timeout and comes back one request at a time (`inflight_cap`)."""
        self._decay(now)
        return self.trips >= self.config.flapping_trips > 0

    def inflight_cap(self, now: float) -> int | None:
        """For a flapping peer in the first `ramp_period` after its probe succeeded: how many requests
        it may have in flight, admitted without the ramp's draw (None: use `admits`). Every request
        in flight when a flapping peer drops again waits for a whole timeout. The draw admitted it to
        a fraction of choices, but an idle peer wins most choices it is admitted to, so it often held
        3-5 requests when it dropped. Gated like a new peer (one request at a time), a drop costs one
        request; a healed peer still serves, and ramps as usual once it has stayed up that long."""
        if self.closed_at is None or now - self.closed_at >= self.config.ramp_period or not self.flapping(now):
            return None
        return self.config.flapping_inflight

    def open_for(self, now: float) -> float:
        """How long the breaker has been open or probing (0 when closed)."""
        if self.state is _CLOSED or self.opened_at is None:
            return 0.0
        return now - self.opened_at

    # -- events --------------------------------------------------------------------------------
    def acquire(self, now: float) -> None:
        """A request is being sent. In HALF_OPEN this takes the single probe slot."""
        state = self.current_state(now)
        if state is _HALF_OPEN and self.probe_started is None:
            self.probe_started = now
        elif state is _OPEN:
            # Forced probe (every peer open: the router never dead-ends): treat it as the probe.
            self._move(_HALF_OPEN, "forced probe")
            self.probe_started = now

    def release(self, now: float) -> None:
        """A request was chosen but never sent: give the probe slot back."""
        if self.state is _HALF_OPEN:
            self.probe_started = None

    def record_success(self, now: float) -> None:
        if self.state is _CLOSED:             # the common case; only OPEN / HALF_OPEN move with time
            self.consecutive = self.consecutive_timeouts = 0
            self.window.bump(0, now)           # "ok"
            return
        self.current_state(now)
        self.consecutive = self.consecutive_timeouts = 0
        if self.state is _HALF_OPEN:
            self.window.clear()
            self.window.add("ok", now)
            self.closed_at = now
            self.healthy_since = now
            self.probe_started = None
            self._move(_CLOSED, "probe succeeded")
            return
        self.window.add("ok", now)

    def record_failure(self, now: float, timeout: bool = False, started: float | None = None) -> None:
        """An error answer, a rejection, or (with `timeout`) no answer in time, for a request sent at
        `started` (when known). A request sent before the probe (or before the breaker closed again)
        says nothing about the peer since: it is ignored, as a late answer in OPEN is, so that the
        late failures of a busy peer's earlier requests cannot fail its probe one after another."""
        self.current_state(now)
        if started is not None and ((self.state is _HALF_OPEN and self.probe_started is not None
                                     and started < self.probe_started)
                                    or (self.state is _CLOSED and self.closed_at is not None
                                        and started < self.closed_at)):
            return
        if self.state is _HALF_OPEN:
            self._reopen(now, "probe failed")
            return
        if self.state is _OPEN:
            return  # late answer to a request sent before the trip
        self.consecutive += 1
        self.consecutive_timeouts = self.consecutive_timeouts + 1 if timeout else 0
        self.window.add("fail", now)
        c = self.config
        # A flapping peer that times out is most likely down again. Waiting for
        # `consecutive_timeouts` kept it closed when fewer requests than that were in flight as it
        # dropped: merely avoided, its exploratory requests went into the outage one by one, each
        # waiting a whole timeout. Open, it is probed on the breaker's cooldown instead.
        if timeout and self.flapping(now):
            self._trip_closed(now, f"timeout after {self.trips} recent trips")
        elif self.consecutive >= c.consecutive_failures:
            self._trip_closed(now, f"{self.consecutive} consecutive failures")
        elif self.consecutive_timeouts >= c.consecutive_timeouts:
            self._trip_closed(now, f"{self.consecutive_timeouts} consecutive timeouts")
        else:
            total = self.window.total(now)
            if total >= c.min_volume:
                rate = self.window.count("fail", now) / total
                if rate > c.failure_rate:
                    self._trip_closed(now, f"failure rate {rate:.0%} over {total} requests")

    # -- internals -----------------------------------------------------------------------------
    def _cooldown(self) -> float:
        """Seconds until the next probe: the backoff ceiling for this trip count, of which the last
        `cooldown_jitter` fraction is random (1.0: full jitter, 0.5: AWS's "equal jitter"). Full
        jitter probed a peer within a few ms of its trip now and then, and a peer that has just
        failed is almost never back that soon: the probe's request is wasted, and when the peer is
        silent it waits a whole timeout. Half the range still spreads probes from many nodes."""
        c = self.config
        j = min(1.0, max(0.0, c.cooldown_jitter))
        steps = min(max(self.trips - 1 + self.failed_probes, 0), 64)
        cap = c.cooldown_cap if self.trips >= c.flapping_trips > 0 else min(c.cooldown_cap, c.outage_cooldown_cap)
        ceiling = min(cap, c.cooldown_base * c.cooldown_factor ** steps)
        return ceiling * (1.0 - j) + j * self._rng.uniform(0.0, ceiling)

    def _decay(self, now: float) -> None:
        period = self.config.decay_period
        while self.trips > 0 and now - self.healthy_since >= period:
            self.trips -= 1
            self.healthy_since += period

    def _trip_closed(self, now: float, reason: str) -> None:
        if self.may_trip is not None and not self.may_trip():
            self.vetoed += 1
            self.consecutive = self.consecutive_timeouts = 0
            return
        self._trip(now, reason)

    def _reopen(self, now: float, reason: str) -> None:
        """The probe failed: the outage goes on (a longer cooldown, not another trip)."""
        self.failed_probes += 1
        self._trip(now, reason, outage=False)

    def _trip(self, now: float, reason: str, outage: bool = True) -> None:
        self._decay(now)
        if outage:
            self.trips += 1
            self.total_trips += 1
            self.failed_probes = 0
        cooldown = max(self.config.cooldown_min, self._cooldown())
        if self.state is _CLOSED:
            self.opened_at = now
        self.open_until = now + cooldown
        self.consecutive = self.consecutive_timeouts = 0
        self.closed_at = None
        self.probe_started = None
        self.healthy_since = now
        self.window.clear()
        self._move(_OPEN, f"{reason}; cooldown {cooldown:.2f}s (trip {self.trips})")

    def _move(self, new: BreakerState, reason: str) -> None:
        old, self.state = self.state, new
        if old is not new and self.on_transition is not None:
            self.on_transition(old, new, reason)
