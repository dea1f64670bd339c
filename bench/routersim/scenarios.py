"""Fault scenarios for the router simulation: what each backend does at time t.

Times are fractions of the run so a shortened run keeps the same proportions (the issue's run is
60 s with faults from 10 s to 40 s, i.e. from 1/6 to 2/3 of the run).
"""
from __future__ import annotations

from dataclasses import dataclass, field

FAULT_START = 10.0 / 60.0
FAULT_END = 40.0 / 60.0


@dataclass(frozen=True)
class Fault:
    """One backend's fault, active in [start, end) seconds."""

    kind: str               # "slow" | "failing" | "flapping" | "brownout"
    start: float
    end: float
    slow_factor: float = 10.0
    error_rate: float = 0.5
    dead_for: float = 2.0   # flapping: dead this long, then up this long, repeating
    up_for: float = 2.0

    def active(self, t: float) -> bool:
        return self.start <= t < self.end

    def dead(self, t: float) -> bool:
        if self.kind != "flapping" or not self.active(t):
            return False
        return (t - self.start) % (self.dead_for + self.up_for) < self.dead_for

    def dead_phases(self) -> list[tuple[float, float]]:
        out, t = [], self.start
        while t < self.end:
            out.append((t, min(t + self.dead_for, self.end)))
            t += self.dead_for + self.up_for
        return out


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: dict[int, Fault] = field(default_factory=dict)     # backend index -> fault
    false_hint_target: int | None = None                       # a lying node calls this backend DEGRADED
    note: str = ""

    @property
    def bad(self) -> list[int]:
        """Backends whose traffic share is scored (route away / recover)."""
        return [i for i, f in self.faults.items() if f.kind != "brownout"]


def scenarios(duration: float) -> list[Scenario]:
    s, e = FAULT_START * duration, FAULT_END * duration
    slow = Fault("slow", s, e, slow_factor=10.0)
    failing = Fault("failing", s, e, error_rate=0.5)
    flapping = Fault("flapping", s, e)
    brown = Fault("brownout", s, e, slow_factor=1.5, error_rate=0.25)
    down = Fault("failing", s, e, error_rate=1.0)
    return [
        Scenario("slow", {3: slow}, note="backend 3 serves 10x slower"),
        Scenario("failing", {5: failing}, note="backend 5 fails 50% of requests in 1 ms"),
        Scenario("flapping", {7: flapping}, note="backend 7 dead 2 s / up 2 s (no answers while dead)"),
        Scenario("combined", {3: slow, 5: failing, 7: flapping}, note="the three faults at once"),
        Scenario("half_failing", {i: down for i in range(5)},
                 note="backends 0-4 fail every request in 1 ms, then heal"),
        Scenario("brownout", {i: brown for i in range(10)},
                 note="every backend 1.5x slower and failing 25% of requests in 1 ms"),
        Scenario("false_hint", {}, false_hint_target=2,
                 note="a lying node repeats 'backend 2 DEGRADED'; every backend is healthy"),
    ]
