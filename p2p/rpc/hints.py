"""Peer-health gossip: `HintBook` keeps what other nodes said about peers, `HintEmitter` decides what we say.

Hints are advisory. A DEGRADED hint multiplies a peer's routing cost by at most `max_multiplier`
(2x), fades exponentially and expires after `ttl`; the router ignores it for a peer it has fresh
local data about, and only applies it to peers it already knows (a hint never creates or removes
a peer). Each (origin, subject) pair is deduplicated and rate-limited, so one noisy or lying node
can neither flood the book nor push a peer beyond the cap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NotRequired, TypedDict

DEGRADED = "DEGRADED"
HEALTHY = "HEALTHY"
STATUSES = (DEGRADED, HEALTHY)


@dataclass(frozen=True, slots=True)
class Hint:
    subject: str
    status: str
    origin: str
    received_at: float
    latency_ms: float | None = None
    error_rate: float | None = None


class HintPayload(TypedDict):
    """What a HintEmitter wants said about a peer, or an operator says through the API (without figures);
    HintGossip signs and broadcasts it."""
    subject: str
    status: str
    latency_ms: NotRequired[float]
    error_rate: NotRequired[float]


class HintSummary(TypedDict):
    """What `GET /routing` shows about the live hints on one peer."""
    status: str
    origins: list[str]
    multiplier: float
    age_s: float


def parse_hint(payload: Mapping[str, object], origin: str, now: float) -> Hint | None:
    """A validated `Hint` from a wire payload, or None if it is malformed."""
    subject = payload.get("subject")
    status = payload.get("status")
    if not isinstance(subject, str) or not subject or status not in STATUSES or not origin:
        return None
    latency = payload.get("latency_ms")
    error_rate = payload.get("error_rate")
    if latency is not None and (not isinstance(latency, (int, float)) or not math.isfinite(latency) or latency < 0):
        return None
    if error_rate is not None and (not isinstance(error_rate, (int, float)) or not 0 <= error_rate <= 1):
        return None
    return Hint(subject, status, origin, now,
                None if latency is None else float(latency), None if error_rate is None else float(error_rate))


class HintBook:
    """Received hints, per subject and origin; memory bounded by `max_subjects * max_origins`."""

    def __init__(self, *, ttl: float = 60.0, decay_tau: float | None = None, per_origin: float = 0.5,
                 max_multiplier: float = 2.0, min_interval: float = 5.0, min_change_interval: float = 1.0,
                 max_subjects: int = 4096, max_origins: int = 16) -> None:
        if max_multiplier < 1.0 or ttl <= 0:
            raise ValueError("need max_multiplier >= 1 and ttl > 0")
        self.ttl = float(ttl)
        self.decay_tau = float(decay_tau) if decay_tau else self.ttl / 3.0
        self.per_origin = float(per_origin)           # extra cost one fresh DEGRADED hint adds
        self.max_multiplier = float(max_multiplier)
        self.min_interval = float(min_interval)       # same status again from the same origin
        self.min_change_interval = float(min_change_interval)  # a status flip from the same origin
        self.max_subjects = max_subjects
        self.max_origins = max_origins
        self._hints: dict[str, dict[str, Hint]] = {}
        self.accepted = 0
        self.dropped = 0

    def receive(self, hint: Hint) -> bool:
        """Store a hint; False when it is a duplicate or comes too soon after the last one."""
        by_origin = self._hints.get(hint.subject)
        last = by_origin.get(hint.origin) if by_origin else None
        if last is not None:
            gap = hint.received_at - last.received_at
            limit = self.min_interval if last.status == hint.status else self.min_change_interval
            if gap < limit:
                self.dropped += 1
                return False
        if by_origin is None:
            if len(self._hints) >= self.max_subjects:
                self._evict_subject()
            by_origin = self._hints[hint.subject] = {}
        elif last is None and len(by_origin) >= self.max_origins:
            oldest = min(by_origin.values(), key=lambda h: h.received_at)
            del by_origin[oldest.origin]
        by_origin[hint.origin] = hint
        self.accepted += 1
        return True

    def _evict_subject(self) -> None:
        stalest = min(self._hints, key=lambda s: max(h.received_at for h in self._hints[s].values()))
        del self._hints[stalest]

    def _live(self, subject: str, now: float) -> list[Hint]:
        by_origin = self._hints.get(subject)
        if not by_origin:
            return []
        expired = [o for o, h in by_origin.items() if now - h.received_at >= self.ttl]
        for o in expired:
            del by_origin[o]
        if not by_origin:
            del self._hints[subject]
            return []
        return list(by_origin.values())

    def multiplier(self, subject: str, now: float) -> float:
        """Cost multiplier in [1, max_multiplier]: each origin's latest DEGRADED hint adds
        `per_origin * exp(-age / decay_tau)`; an origin's HEALTHY hint replaces its DEGRADED one."""
        extra = 0.0
        for h in self._live(subject, now):
            if h.status == DEGRADED:
                extra += self.per_origin * math.exp(-(now - h.received_at) / self.decay_tau)
        return min(self.max_multiplier, 1.0 + extra)

    def latest(self, subject: str, now: float) -> Hint | None:
        live = self._live(subject, now)
        return max(live, key=lambda h: h.received_at) if live else None

    def summary(self, subject: str, now: float) -> HintSummary | None:
        """What `GET /routing` shows about hints on `subject` (None when there are none)."""
        live = self._live(subject, now)
        if not live:
            return None
        degraded = [h for h in live if h.status == DEGRADED]
        return {"status": DEGRADED if degraded else HEALTHY,
                "origins": sorted(h.origin for h in (degraded or live)),
                "multiplier": round(self.multiplier(subject, now), 3),
                "age_s": round(now - max(h.received_at for h in live), 3)}

    def forget(self, subject: str) -> None:
        self._hints.pop(subject, None)

    def __contains__(self, subject: object) -> bool:
        return subject in self._hints

    def __len__(self) -> int:
        return sum(len(v) for v in self._hints.values())


class HintEmitter:
    """Turns our own view of each peer into occasional hints, with hysteresis and rate limits.

    A peer becomes DEGRADED when its latency exceeds `degrade_factor` x the baseline (the median
    peer) or its error rate exceeds `degrade_error_rate`; it becomes HEALTHY again only below
    `recover_factor` x baseline and `recover_error_rate`. A change is announced at most once per
    `min_interval` per peer; a DEGRADED verdict is repeated every `refresh_interval` so it does
    not fade at receivers while it still holds. Nothing is said about peers that were always healthy.
    """

    def __init__(self, *, degrade_factor: float = 3.0, recover_factor: float = 1.5,
                 degrade_error_rate: float = 0.2, recover_error_rate: float = 0.05,
                 min_latency_ms: float = 5.0, min_interval: float = 2.0, refresh_interval: float = 20.0) -> None:
        if recover_factor > degrade_factor or recover_error_rate > degrade_error_rate:
            raise ValueError("recover thresholds must be below degrade thresholds (hysteresis)")
        self.degrade_factor = degrade_factor
        self.recover_factor = recover_factor
        self.degrade_error_rate = degrade_error_rate
        self.recover_error_rate = recover_error_rate
        self.min_latency_ms = min_latency_ms
        self.min_interval = min_interval
        self.refresh_interval = refresh_interval
        self._verdict: dict[str, str] = {}        # current local verdict per subject
        self._said: dict[str, tuple[str, float]] = {}  # last (status, time) announced per subject

    def observe(self, subject: str, latency_ms: float, error_rate: float, now: float,
                baseline_ms: float | None = None) -> HintPayload | None:
        """Feed the current local view of `subject`; returns a hint payload to sign and broadcast, or None."""
        base = max(self.min_latency_ms, baseline_ms if baseline_ms is not None else latency_ms)
        verdict = self._verdict.get(subject, HEALTHY)
        if verdict == HEALTHY:
            if latency_ms > self.degrade_factor * base or error_rate > self.degrade_error_rate:
                verdict = DEGRADED
        elif latency_ms < self.recover_factor * base and error_rate < self.recover_error_rate:
            verdict = HEALTHY
        self._verdict[subject] = verdict
        said = self._said.get(subject)
        if said is None:
            due = verdict == DEGRADED
        else:
            status, at = said
            gap = now - at
            due = gap >= self.min_interval and (status != verdict or (verdict == DEGRADED and gap >= self.refresh_interval))
        if not due:
            return None
        self._said[subject] = (verdict, now)
        return {"subject": subject, "status": verdict, "latency_ms": round(latency_ms, 3),
                "error_rate": round(error_rate, 4)}

    def forget(self, subject: str) -> None:
        self._verdict.pop(subject, None)
        self._said.pop(subject, None)
