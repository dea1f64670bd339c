"""Protection: how the storm protection (dial pacing and backoff; RPC warm-up, AIMD, retry budget,
breakers and client throttle; queue drain warm-up) is rolled out, as an operator rolls out any
risky change: `off`, then `shadow` (each mechanism decides as usual, but only counts and logs what
it would have limited, delaying and refusing nothing), then `on` for a canary share of the
traffic, then `on` for all of it.

One unit of traffic (a dial, an RPC with its retries, a held message) draws once whether it is in
the canary share (`covers`), so every mechanism treats it the same way; each mechanism then reports
what it decided (`limited`), which counts it and says whether to enforce it.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypedDict

log = logging.getLogger("p2p.protection")

MODES = ("off", "shadow", "on")
ENFORCE = "on"      # verdicts of `covers`: this unit is protected ...
SHADOW = "shadow"   # ... or only watched; None: neither (mode off, or outside the canary share)
MECHANISMS = ("dial.rate", "dial.backoff", "rpc.warmup", "rpc.throttle", "rpc.retry_budget", "rpc.breaker",
              "rpc.aimd", "queue.warmup")


class ProtectionView(TypedDict):
    mode: str
    canary: float
    units: dict[str, int]                    # units of traffic by verdict: on, shadow, bypassed
    mechanisms: dict[str, dict[str, int]]    # mechanism -> {"enforced": n, "shadowed": n}


class Protection:
    """The mode and canary share of one node's storm protection, and what it limited.

    `counters[mechanism]` holds "enforced" (limits applied) and "shadowed" (limits it would have
    applied in shadow mode); `units` counts units of traffic by verdict ("on", "shadow", "bypassed"
    for those outside the canary share). Shadow decisions are logged at most once per
    `log_interval` seconds per mechanism, with the count since the last line.
    """

    def __init__(self, mode: str = "on", canary: float = 1.0, *, rng: random.Random | None = None,
                 log_interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not 0.0 <= canary <= 1.0:
            raise ValueError("canary must be within 0..1")
        self.mode = mode
        self.canary = float(canary)
        self._rng = rng or random.Random()
        self._clock = clock
        self.log_interval = log_interval
        self.counters: dict[str, dict[str, int]] = {name: {"enforced": 0, "shadowed": 0} for name in MECHANISMS}
        self.units = {"on": 0, "shadow": 0, "bypassed": 0}
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}
        self._verdict = None if mode == "off" else (ENFORCE if mode == "on" else SHADOW)

    @property
    def active(self) -> bool:
        """Whether any unit of traffic can be covered (mode is not off and the canary share is not 0)."""
        return self._verdict is not None and self.canary > 0.0

    def covers(self) -> str | None:
        """Draw for one unit of traffic: ENFORCE, SHADOW, or None (unprotected)."""
        verdict = self._verdict
        if verdict is None:
            return None
        if self.canary < 1.0 and self._rng.random() >= self.canary:
            self.units["bypassed"] += 1
            return None
        self.units[verdict] += 1
        return verdict

    def limited(self, mechanism: str, verdict: str | None, detail: str = "") -> bool:
        """`mechanism` decided to limit a unit covered with `verdict`: count it; True to enforce it."""
        if verdict is None:
            return False
        if verdict == ENFORCE:
            self.counters[mechanism]["enforced"] += 1
            return True
        self.counters[mechanism]["shadowed"] += 1
        self._log_shadow(mechanism, detail)
        return False

    def _log_shadow(self, mechanism: str, detail: str) -> None:
        self._unlogged[mechanism] = self._unlogged.get(mechanism, 0) + 1
        now = self._clock()
        if now - self._logged_at.get(mechanism, -1e18) < self.log_interval:
            return
        count = self._unlogged.pop(mechanism)
        self._logged_at[mechanism] = now
        log.info("shadow protection: %s would have limited %d unit(s) of traffic%s", mechanism, count,
                 f" ({detail})" if detail else "", extra={"reason": f"shadow_{mechanism.replace('.', '_')}"})

    def snapshot(self) -> ProtectionView:
        return {"mode": self.mode, "canary": self.canary, "units": dict(self.units),
                "mechanisms": {name: dict(row) for name, row in self.counters.items()}}
