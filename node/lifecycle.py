"""Lifecycle: starts a node's components in order and stops them in reverse, in uvicorn's spirit.

Each component's stop is registered (on an `AsyncExitStack`) as soon as its start returns, so a start
that fails halfway stops exactly what had started. Stopping runs every registered step even when one
raises or hangs: each step is logged, isolated, and bounded by `step_timeout`, and the whole by
`total_timeout`; a step still running at its bound is abandoned (its task cancelled) and the rest go on.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from contextlib import AsyncExitStack
from typing import Awaitable, Callable

log = logging.getLogger("node.lifecycle")

Step = Callable[[], "Awaitable[None] | None"]


class StartFailed(Exception):
    """A component failed to start; what had started before it has been stopped."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause


async def _call(step: Step) -> None:
    result = step()
    if inspect.isawaitable(result):
        await result


class Lifecycle:
    def __init__(self, *, step_timeout: float, total_timeout: float) -> None:
        self.step_timeout = step_timeout
        self.total_timeout = total_timeout
        self._stack = AsyncExitStack()
        self.started: list[str] = []           # names of started components, in order
        self.unfinished: list[str] = []        # stop steps that raised, hung or were skipped at the last stop
        self._deadline = 0.0

    async def start(self, name: str, start: Step, stop: Step | None = None,
                    stop_timeout: Callable[[], float] | None = None) -> None:
        """Start one component and register its stop (bounded by what `stop_timeout` says when the stop begins, else
        the step timeout); on failure stop everything started and raise StartFailed."""
        log.debug("starting %s", name)
        try:
            await _call(start)
        except Exception as exc:
            log.error("%s failed to start: %s; stopping what had started (%s)", name, exc,
                      ", ".join(self.started) or "nothing")
            await self.stop()
            raise StartFailed(name, exc) from exc
        except BaseException:          # cancelled while starting (e.g. a signal): still leave nothing behind
            await self.stop()
            raise
        self.started.append(name)
        if stop is not None:
            self.on_stop(name, stop, stop_timeout)

    def on_stop(self, name: str, stop: Step, timeout: Callable[[], float] | None = None) -> None:
        """Register a stop step for something that needs no start (a file to remove, a store to close)."""
        self._stack.push_async_callback(self._stop_step, name, stop, timeout)

    async def stop(self) -> bool:
        """Run every registered stop step in reverse order; True when all finished cleanly in time."""
        self.unfinished = []
        self._deadline = time.monotonic() + self.total_timeout
        stack, self._stack = self._stack, AsyncExitStack()
        self.started = []
        await stack.aclose()
        return not self.unfinished

    async def _stop_step(self, name: str, stop: Step, timeout: Callable[[], float] | None = None) -> None:
        budget = min(self.step_timeout if timeout is None else timeout(), self._deadline - time.monotonic())
        if budget <= 0:
            log.error("not stopping %s: the shutdown ran out of its %.0f s", name, self.total_timeout)
            self.unfinished.append(name)
            return
        log.debug("stopping %s", name)
        task = asyncio.ensure_future(_call(stop))
        try:
            done, _ = await asyncio.wait({task}, timeout=budget)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()              # not awaited: a step that ignores cancellation must not hold the rest
            log.error("stopping %s did not finish within %.1f s; going on without it", name, budget)
            self.unfinished.append(name)
            return
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        if exc is not None:
            log.error("stopping %s failed", name, exc_info=exc)
            self.unfinished.append(name)
