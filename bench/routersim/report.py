"""Scores a simulation run: latency percentiles, errors, retry amplification, route-away and recovery times.

Definitions (printed with the tables):
- fair share: 1 / backends of all attempts.
- time to route away: from fault start (for a flapping backend: from the start of each dead phase,
  worst phase reported) to the end of the first 100 ms window that begins a run of 3 consecutive
  windows in which the faulty backend gets less than 5% of attempts (half its fair share).
- time to recover: from the end of the fault to the end of the first 100 ms window that begins a
  run of 3 consecutive windows in which the backend gets at least 5% of attempts (50% of fair share).
"""
from __future__ import annotations

from bench.routersim.scenarios import FAULT_END, FAULT_START, Scenario
from bench.routersim.sim import Result

RUN = 3
AWAY_SHARE = 0.5      # x fair share
BACK_SHARE = 0.5      # x fair share


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


def _share(result: Result, w: int, backend: int) -> float | None:
    row = result.shares[w]
    total = sum(row)
    return None if total == 0 else row[backend] / total


def _first_run(result: Result, backend: int, t0: float, t1: float, below: bool, threshold: float) -> float | None:
    """End time of the first window in [t0, t1) beginning RUN windows that satisfy the share test."""
    win = result.window
    first = int(round(t0 / win + 1e-9))
    last = min(len(result.shares), int(t1 / win + 1e-9))
    streak_start = None
    streak = 0
    for w in range(first, last):
        s = _share(result, w, backend)
        ok = s is not None and ((s < threshold) if below else (s >= threshold))
        if ok:
            if streak == 0:
                streak_start = w
            streak += 1
            if streak >= RUN:
                return (streak_start + 1) * win
        else:
            streak = 0
    if streak and streak_start is not None and last - streak_start == streak:
        return (streak_start + 1) * win   # run cut short by the end of the interval
    return None


def route_away(result: Result, scenario: Scenario, backend: int, duration: float, fair: float) -> tuple[float, bool]:
    """(seconds, met) — when never met, the seconds are the length of the interval searched."""
    fault = scenario.faults[backend]
    phases = fault.dead_phases() if fault.kind == "flapping" else [(fault.start, fault.end)]
    worst, met = 0.0, True
    for s, e in phases:
        t = _first_run(result, backend, s, e, True, AWAY_SHARE * fair)
        if t is None:
            worst, met = max(worst, e - s), False
        else:
            worst = max(worst, t - s)
    return worst, met


def recover(result: Result, scenario: Scenario, backend: int, duration: float, fair: float) -> tuple[float, bool]:
    end = scenario.faults[backend].end
    t = _first_run(result, backend, end, duration, False, BACK_SHARE * fair)
    return (duration - end, False) if t is None else (t - end, True)


def fair_share_kept(result: Result, backend: int, duration: float) -> float:
    """The backend's share of attempts during the fault window, as a fraction of its fair share."""
    win = result.window
    first, last = int(FAULT_START * duration / win), int(FAULT_END * duration / win)
    sent = sum(result.shares[w][backend] for w in range(first, last))
    total = sum(sum(result.shares[w]) for w in range(first, last))
    return (sent / total) * len(result.shares[0]) if total else 0.0


def summarize(result: Result, scenario: Scenario, duration: float) -> dict:
    lat = sorted(result.fault_latencies)
    everything = sorted(result.latencies)
    backends = len(result.shares[0])
    fair = 1.0 / backends
    out = {
        "p50": percentile(lat, 0.50) * 1000.0,
        "p99": percentile(lat, 0.99) * 1000.0,
        "p999": percentile(lat, 0.999) * 1000.0,
        "errors": result.fault_failed / max(1, result.fault_requests),
        "amplification": result.fault_attempts / max(1, result.fault_requests),
        "requests": result.fault_requests,
        "p999_all": percentile(everything, 0.999) * 1000.0,
        "amplification_all": result.attempts / max(1, result.requests),
    }
    bad = scenario.bad
    if bad:
        aways = [route_away(result, scenario, b, duration, fair) for b in bad]
        backs = [recover(result, scenario, b, duration, fair) for b in bad]
        out["away"] = max(a[0] for a in aways)
        out["away_met"] = all(a[1] for a in aways)
        out["recover"] = max(b[0] for b in backs)
        out["recover_met"] = all(b[1] for b in backs)
    if scenario.false_hint_target is not None:
        out["fair_kept"] = fair_share_kept(result, scenario.false_hint_target, duration)
    return out
