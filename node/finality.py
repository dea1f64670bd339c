"""How long orders take to become final: a histogram for /metrics and recent quantiles for the console.

The layer that decides finality calls `observe_finality(seconds)` once per own transaction or
event, with the time from its submission to the moment it became final on this node.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterator, TypedDict

from prometheus_client.core import Metric

from node.metrics import histogram_family
from p2p.rpc.metrics import LatencyHistogram

FINALITY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECENT = 2048           # samples kept for the console's quantiles
RECENT_WINDOW = 60.0    # seconds they describe


class FinalitySummary(TypedDict):
    """Finality of own orders over the recent window, as /status shows it (seconds; None with no samples)."""

    observed_total: int
    window_seconds: float
    samples: int
    p50_seconds: float | None
    p99_seconds: float | None
    max_seconds: float | None


class FinalityTracker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.histogram = LatencyHistogram(FINALITY_BUCKETS)
        self.recent: deque[tuple[float, float]] = deque(maxlen=RECENT)

    def observe_finality(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.histogram.observe(seconds)
        self.recent.append((self.clock(), seconds))

    def summary(self) -> FinalitySummary:
        """Quantiles over the last RECENT_WINDOW seconds (at most RECENT samples)."""
        cutoff = self.clock() - RECENT_WINDOW
        values = sorted(s for t, s in self.recent if t >= cutoff)

        def pick(q: float) -> float | None:
            return round(values[min(len(values) - 1, int(q * len(values)))], 6) if values else None

        return {"observed_total": self.histogram.count, "window_seconds": RECENT_WINDOW, "samples": len(values),
                "p50_seconds": pick(0.5), "p99_seconds": pick(0.99),
                "max_seconds": round(values[-1], 6) if values else None}

    def metrics(self) -> Iterator[Metric]:
        yield histogram_family("exchange_node_finality_duration_seconds",
                               "Time from an own order or cancel's submission to its finality on this node",
                               (), [((), self.histogram)])
