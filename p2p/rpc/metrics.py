"""Per-peer RPC measurements the adaptive router scores: peak-EWMA latency, in-flight count, windowed outcomes;
and the latency histograms operators read (per service and outcome, exposed on GET /metrics)."""
from __future__ import annotations

import math
from bisect import bisect_left
from typing import Sequence

from p2p.resilience.window import WindowCounter

FAILURE_KINDS = ("error", "timeout", "rejected")
OUTCOMES = ("ok",) + FAILURE_KINDS
# Upper bounds (seconds) of the RPC latency buckets: loopback answers take ~0.1-1 ms, a WAN peer tens of
# ms, and the default RPC_TIMEOUT is 5 s.
RPC_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    """Counts of observations per latency bucket, Prometheus-style (`le` bounds in seconds, +Inf last).

    Observing is one bisect and two additions on plain numbers, cheap enough for every RPC attempt;
    the cumulative view is built only when /metrics is scraped."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = RPC_LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)   # the last slot is above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, observations <= le), ..., ("+Inf", all)], as Prometheus buckets are written."""
        rows, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            rows.append((repr(float(bound)), running))
        rows.append(("+Inf", running + self.counts[-1]))
        return rows

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (None when empty or above every bound)."""
        total = self.count
        if not total:
            return None
        rank, running = q * total, 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            if running >= rank:
                return bound
        return None


def outcome_histograms(bounds: Sequence[float] = RPC_LATENCY_BUCKETS) -> dict[str, LatencyHistogram]:
    """One histogram per attempt outcome (`OUTCOMES`), shared by every peer of one service."""
    return {outcome: LatencyHistogram(bounds) for outcome in OUTCOMES}


class PeerMetrics:
    """What one node has seen of one peer's RPCs. All times are seconds and passed in.

    Latency is a peak-EWMA (Finagle): a sample above the estimate replaces it at once, a sample
    below pulls it down with weight 1 - exp(-dt / tau), dt being the time since the previous
    sample, so the estimate reacts instantly to trouble and forgets it over about `tau`.
    A failure is recorded as a sample of max(observed, `penalty_latency`): a peer that fails fast
    looks slow and never attracts traffic (timeouts as peaks, errors as plain EWMA steps).
    """

    __slots__ = ("tau", "penalty_latency", "alpha", "ewma", "stamp", "samples", "outstanding", "window",
                 "fresh_window", "errors", "timeouts", "last_seen", "last_progress", "created", "success_weight_max",
                 "histograms", "_ok")

    def __init__(self, *, tau: float = 1.0, penalty_latency: float = 0.25, window: float = 5.0,
                 buckets: int = 10, fresh_window: float = 2.0, alpha: float = 0.1, now: float = 0.0,
                 success_weight_max: float = 0.5, histograms: dict[str, LatencyHistogram] | None = None) -> None:
        self.tau = float(tau)
        self.alpha = float(alpha)          # weight of one outcome in the fast failure averages
        # Most one success after a quiet spell may take off the error average (a fraction of it):
        # a failure after a quiet spell weighs fully (strong evidence), but a success only halves the
        # average, since a peer failing half its requests answers half its probes. A healed peer sheds
        # an error average of 0.5 in 2-3 successful probes.
        self.success_weight_max = float(success_weight_max)
        self.penalty_latency = float(penalty_latency)
        self.ewma: float | None = None     # seconds; None until the first sample
        self.stamp = now                   # time of the last latency sample
        self.samples = 0                   # latency samples ever
        self.outstanding = 0
        self.window = WindowCounter(window, buckets)   # success / error / timeout / rejected
        self.fresh_window = float(fresh_window)        # `fresh_count` reads the window's newest buckets
        # Moving averages of "this answer was an error" / "this attempt timed out": they react within
        # ~1/alpha outcomes (the window's rates need the whole window to turn over), and a sample
        # after a quiet spell weighs as much as it would in the latency EWMA.
        self.errors = 0.0
        self.timeouts = 0.0
        self.last_seen: float | None = None   # last answer of any kind (success or error)
        self.last_progress = now              # last answer, or when the peer went from idle to busy
        self.created = now
        self.histograms = histograms          # outcome -> LatencyHistogram (shared per service), or None
        self._ok = histograms["ok"] if histograms is not None else None

    # -- recording -----------------------------------------------------------------------------
    def observe(self, latency: float, now: float, peak: bool = True) -> None:
        """One latency sample (seconds): peak-EWMA update, or a plain time-weighted EWMA step
        when `peak` is False."""
        latency = max(0.0, latency)
        cur = self.ewma
        if cur is None or (peak and latency >= cur):
            self.ewma = latency
        else:
            dt = now - self.stamp
            w = math.exp(-dt / self.tau) if dt > 0 else 1.0
            self.ewma = cur * w + latency * (1.0 - w)
        self.stamp = now
        self.samples += 1

    def _weight(self, now: float) -> float:
        """Weight of this outcome in the failure averages: `alpha`, or more after a quiet spell
        (1 - exp(-dt / tau), as for latency), so a sparse probe is not drowned by old history."""
        if not self.samples:
            return 1.0
        dt = now - self.stamp
        a = self.alpha
        if dt > 0.0:
            t = 1.0 - math.exp(-dt / self.tau)
            if t > a:
                return t
        return a

    def on_start(self, now: float) -> None:
        if self.outstanding == 0:
            self.last_progress = now
        self.outstanding += 1

    def _finish(self) -> None:
        if self.outstanding > 0:
            self.outstanding -= 1

    def on_success(self, latency: float, now: float) -> None:
        # The hot path: `_finish`, `_weight` and `observe` inlined, sharing one exp().
        if self.outstanding > 0:
            self.outstanding -= 1
        if latency < 0.0:
            latency = 0.0
        cur = self.ewma
        dt = now - self.stamp
        decay = math.exp(-dt / self.tau) if dt > 0.0 else 1.0
        if cur is None or latency >= cur:
            self.ewma = latency
        else:
            self.ewma = cur * decay + latency * (1.0 - decay)
        if self.errors or self.timeouts:
            if self.samples:
                a = 1.0 - decay
                if a < self.alpha:
                    a = self.alpha
                self.timeouts *= 1.0 - a          # an answer is strong evidence against "it times out"
                if a > self.success_weight_max:
                    a = self.success_weight_max   # ... but weak evidence against "it fails half the time"
                self.errors *= 1.0 - a
            else:
                self.errors = self.timeouts = 0.0
        self.stamp = now
        self.samples += 1
        self.window.bump(0, now)               # "success" (OUTCOMES[0])
        self.last_seen = self.last_progress = now
        ok = self._ok
        if ok is not None:                     # LatencyHistogram.observe, inlined
            ok.counts[bisect_left(ok.bounds, latency)] += 1
            ok.sum += latency

    def on_failure(self, kind: str, latency: float, now: float) -> None:
        """`kind` is "error" (an error answer), "timeout" (no answer) or "rejected" (overloaded)."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        self._finish()
        # A timeout is a slow answer: it jumps the peak. An error or rejection costs the penalty
        # latency too, but smoothed: when every peer fails now and then (a brownout), the estimate
        # then tracks each peer's failure *rate* instead of how recently it last failed.
        a = self._weight(now)
        self.observe(max(latency, self.penalty_latency), now, peak=kind == "timeout")
        timeout = kind == "timeout"
        self.errors += a * ((0.0 if timeout else 1.0) - self.errors)
        self.timeouts += a * ((1.0 if timeout else 0.0) - self.timeouts)
        self.window.add(kind, now)
        if self.histograms is not None:
            self.histograms[kind].observe(latency)
        if kind != "timeout":        # an answer proves the peer is alive; a timeout does not
            self.last_seen = self.last_progress = now

    def restart(self, latency: float, now: float, baseline: tuple[float, float] = (0.0, 0.0)) -> None:
        """A recovered peer: forget the latency and timeout history (the estimate becomes `latency`;
        an answer disproves "it does not answer"). The error average is only lowered to the
        baseline, never cleared below what the outcomes so far support: one success after many
        errors is weak evidence (see `success_weight_max`)."""
        self.ewma = max(0.0, latency)
        self.stamp = now
        self.timeouts = baseline[1]
        if self.errors < baseline[0]:
            self.errors = baseline[0]

    # -- reading -------------------------------------------------------------------------------
    def silence(self, now: float) -> float:
        """How long requests have been in flight with no answer at all (0 when idle).

        A peer that stops answering is noticed after about one normal latency, long before any
        timeout fires."""
        if self.outstanding <= 0:
            return 0.0
        return max(0.0, now - self.last_progress)

    def latency(self, now: float, prior: float, stale_tau: float = 0.0, silence_weight: float = 1.0) -> float:
        """Latency estimate (s): the peak-EWMA, drifting back to `prior` with time constant
        `stale_tau` when no samples arrive, and never below the current silence x `silence_weight`."""
        est = self.ewma
        if est is None:
            est = prior
        elif stale_tau > 0:
            age = now - self.stamp
            if age > 0:
                est = prior + (est - prior) * math.exp(-age / stale_tau)
        s = self.silence(now) * silence_weight
        return s if s > est else est

    def failure_rates(self, now: float, baseline: tuple[float, float] = (0.0, 0.0),
                      stale_tau: float = 0.0) -> tuple[float, float]:
        """(error, timeout) moving averages, drifting back to `baseline` with time constant
        `stale_tau` when no outcomes arrive (like `latency`)."""
        err, to = self.errors, self.timeouts
        if stale_tau > 0 and self.samples:
            age = now - self.stamp
            if age > 0:
                k = math.exp(-age / stale_tau)
                err = baseline[0] + (err - baseline[0]) * k
                to = baseline[1] + (to - baseline[1]) * k
        return err, to

    def rate(self, kind: str, now: float, min_volume: int = 1) -> float:
        return self.window.rate(kind, now, min_volume)

    def fresh_count(self, now: float) -> int:
        """Outcomes recorded in the last `fresh_window` seconds (to the window's bucket width)."""
        return self.window.recent_total(self.fresh_window, now)

    def counts(self, now: float) -> dict[str, int]:
        return self.window.counts(now)
