"""`GET /health` (the process is alive and its event loop responsive) and `GET /ready` (ready to take
orders: every registered readiness check passes).

Readiness is a list of named checks other components register, `readiness.register("quorum", fn)`,
where `fn()` returns a bool or `(bool, detail)`; `/ready` answers 200 when all pass and 503 naming
the failing ones otherwise. A check that raises counts as failing, with the error as its detail.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from typing import Callable, TypedDict, Union

from aiohttp import web

from node.api.base import json_response
from node.tasks import cancel_and_wait

log = logging.getLogger("node.health")

CheckResult = Union[bool, tuple[bool, str]]
LAG_PROBE_INTERVAL = 0.25
LAG_WINDOW = 10.0


class CheckOutcome(TypedDict):
    """One readiness check as /ready lists it."""

    name: str
    ok: bool
    detail: str


class ReadinessChecks:
    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], CheckResult]] = {}

    def register(self, name: str, check: Callable[[], CheckResult]) -> None:
        """Add (or replace) the check called `name`."""
        self._checks[name] = check

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    def evaluate(self) -> tuple[bool, list[CheckOutcome]]:
        results: list[CheckOutcome] = []
        for name, check in self._checks.items():
            try:
                outcome = check()
                ok, detail = outcome if isinstance(outcome, tuple) else (bool(outcome), "")
            except Exception as exc:  # noqa: BLE001 - a broken check means "not ready", never a 500
                ok, detail = False, f"check failed: {type(exc).__name__}: {exc}"
            results.append({"name": name, "ok": bool(ok), "detail": detail})
        return all(r["ok"] for r in results), results


class LoopMonitor:
    """How late the event loop runs a timer (a task sleeps LAG_PROBE_INTERVAL and records the excess), and
    how long the garbage collector's full passes stop it: the usual cause of a late timer on a node
    holding a large book."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.samples: deque[tuple[float, float]] = deque(maxlen=int(LAG_WINDOW / LAG_PROBE_INTERVAL) + 1)
        self.gc_pauses: deque[tuple[float, float]] = deque(maxlen=256)     # (when, seconds) of full collections
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health.loop_monitor")
        gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        await cancel_and_wait(self._task)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append((self.clock(), time.perf_counter() - self._gc_started))

    async def _run(self) -> None:
        while True:
            before = self.clock()
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            now = self.clock()
            self.samples.append((now, max(0.0, now - before - LAG_PROBE_INTERVAL)))

    def lag(self) -> dict[str, float | None]:
        cutoff = self.clock() - LAG_WINDOW
        recent = [lag for t, lag in self.samples if t >= cutoff]
        pauses = [pause for t, pause in self.gc_pauses if t >= cutoff]
        return {"last_seconds": round(self.samples[-1][1], 6) if self.samples else None,
                "max_10s_seconds": round(max(recent), 6) if recent else None,
                "full_gc_10s": len(pauses), "full_gc_max_10s_seconds": round(max(pauses), 6) if pauses else None}


def install_health_routes(app: web.Application, monitor: LoopMonitor, readiness: ReadinessChecks,
                          started_at: float) -> None:
    async def get_health(request: web.Request) -> web.Response:
        return json_response({"status": "ok", "uptime_seconds": round(time.time() - started_at, 3),
                              "loop_lag": monitor.lag()})

    async def get_ready(request: web.Request) -> web.Response:
        ready, checks = readiness.evaluate()
        failing = [c["name"] for c in checks if not c["ok"]]
        return json_response({"ready": ready, "checks": checks, "failing": failing}, 200 if ready else 503)

    app.router.add_get("/health", get_health)
    app.router.add_get("/ready", get_ready)
