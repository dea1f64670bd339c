"""HaltWatch: a chain that cannot finalise says so, loudly but not in a flood. No I/O: time is passed in.

The service feeds it each tick with whether the core hears a quorum (`ChainCore.quorum_present`) and
each validator's silence (`ChainCore.validator_liveness`). Once the quorum has been missing for
`warn_after` seconds it returns a WARNING naming the validators not heard from within `live_after` and for
how long, at a follower as at a validator (a follower hears them through the last block's signatures and
its links' heartbeats, so a validator that signed the last block and then died is named too); while
the quorum stays missing it repeats at most every `repeat` seconds, with the duration so far; when the
quorum is back it returns one line saying how long the halt lasted. `reason` is the same text for
`/ready` and `/status`, and `halted_seconds` feeds the `exchange_node_chain_halted_seconds` gauge.
"""
from __future__ import annotations

import logging
from typing import Sequence, TypedDict

WARN_AFTER = 4.0        # s without a quorum before the first WARNING (a validator is live for 3 s after its last
                        # message, so a kill is warned about about 7 s after it happened)
REPEAT = 60.0           # s between repeated WARNINGs while the halt lasts
LIVE_AFTER = 3.0        # a validator not heard from for longer than this is silent (CoreConfig.live_after)

Liveness = Sequence[tuple[str, "float | None", bool]]     # (node id, seconds since heard or None, is us)


class SilentView(TypedDict):
    node_id: str
    silent_s: float | None          # None: never heard since this node started


class HaltView(TypedDict):
    """The halt as /status (`halt`) and the console show it."""

    halted: bool
    since: float | None
    seconds: float
    reason: str | None
    silent: list[SilentView]


class HaltWatch:
    def __init__(self, warn_after: float = WARN_AFTER, repeat: float = REPEAT, live_after: float = LIVE_AFTER) -> None:
        self.warn_after = warn_after
        self.repeat = repeat
        self.live_after = live_after
        self.since: float | None = None           # when the quorum was last seen missing after being there
        self.role = "validator"
        self.silent: list[tuple[str, float | None]] = []     # (node id, when last heard or None)
        self.needed = 1
        self.total = 0
        self.warnings = 0
        self._warned_at: float | None = None

    def observe(self, now: float, quorum: bool, liveness: Liveness, role: str, needed: int) -> tuple[int, str] | None:
        """(log level, message) to log now, or None. `needed`: the validators a quorum takes."""
        if quorum:
            since, warned = self.since, self._warned_at is not None
            self.since = self._warned_at = None
            self.silent = []
            if since is None or not warned:
                return None
            return logging.WARNING, f"chain quorum is back after {_duration(now - since)}: orders become final again"
        if self.since is None:
            self.since = now
        self.role, self.needed, self.total = role, needed, len(liveness)
        # a validator hears the others' consensus messages; a follower hears them through the last block's
        # signatures and its links' heartbeats: either way, one not heard within live_after is named
        self.silent = [(node, None if age is None else now - age) for node, age, us in liveness
                       if not us and (age is None or age > self.live_after)]
        if now - self.since < self.warn_after:
            return None
        if self._warned_at is not None and now - self._warned_at < self.repeat:
            return None
        self._warned_at = now
        self.warnings += 1
        return logging.WARNING, self.reason(now) or ""

    def halted_seconds(self, now: float) -> float:
        return 0.0 if self.since is None else max(0.0, now - self.since)

    def reason(self, now: float) -> str | None:
        """Why no order can become final now, naming who the chain waits for; None while it can."""
        if self.since is None:
            return None
        lasted = _duration(now - self.since)
        silent = ", ".join(f"{node} ({'never heard since start' if heard is None else 'silent ' + _duration(now - heard)})"
                           for node, heard in self.silent)
        if self.role != "validator":
            return (f"chain halted for {lasted}: no final block reached this follower and fewer than a quorum of "
                    f"validators heard ({self.needed} of {self.total} needed, {self.total - len(self.silent)} heard "
                    f"through the last block's signatures and the heartbeats of those it links to); not heard from: "
                    f"{silent or 'none'}")
        return (f"chain halted for {lasted}: no quorum of validators ({self.needed} of {self.total} needed, "
                f"{self.total - len(self.silent)} heard); not heard from: {silent or 'none'}")

    def view(self, now: float) -> HaltView:
        """The halt as `/status` and the console show it."""
        return {"halted": self.since is not None, "since": self.since, "seconds": round(self.halted_seconds(now), 1),
                "reason": self.reason(now),
                "silent": [{"node_id": node, "silent_s": None if heard is None else round(now - heard, 1)}
                           for node, heard in self.silent]}


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"
