"""The chain core's clock: when its next tick is due, and waking early when messages bring work forward.

A tick comes at the core's next deadline, every BUSY_TICK while it has work of its own (transactions to
resubmit, a mempool, a disk to retry), else every IDLE_TICK at most. Messages and submits are handled as
they come (the service's pump), which wakes the ticker early when they bring a deadline forward; so an idle
node wakes a few times a second, not fifty.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Protocol

BUSY_TICK = 0.02    # s between ticks while the core has work of its own
IDLE_TICK = 0.25    # s between ticks at most while it has none (deadlines and messages wake it sooner)


class Clocked(Protocol):
    """What the ticker asks of the core."""

    def busy(self) -> bool: ...
    def next_deadline(self) -> float | None: ...


def tick_delay(core: Clocked | None, disk_failing: bool, now: float) -> float:
    """Seconds until the next tick."""
    cap = BUSY_TICK if core is None or disk_failing or core.busy() else IDLE_TICK
    deadline = core.next_deadline() if core is not None else None
    return cap if deadline is None else min(cap, max(0.0, deadline - now))


class Ticker:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._wake: asyncio.Future[None] | None = None      # resolved to tick now
        self._due = 0.0                                     # when the ticker will wake by itself

    async def sleep(self, delay: float) -> None:
        """Until `delay` has passed or `nudge` wakes it."""
        loop = asyncio.get_running_loop()
        self._due = self.clock() + delay
        wake = self._wake = loop.create_future()
        timer = loop.call_later(delay, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()

    def nudge(self, core: Clocked) -> None:
        """After messages or submits: tick sooner if they brought a deadline, or work, forward."""
        wake = self._wake
        if wake is None or wake.done():
            return
        due = self._due
        deadline = core.next_deadline()
        if (deadline is not None and deadline < due) or (due - self.clock() > BUSY_TICK and core.busy()):
            wake.set_result(None)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
