"""Lifecycle: stops registered as components start, run in reverse, each isolated and bounded."""
from __future__ import annotations

import asyncio
import time

import pytest

from node.lifecycle import Lifecycle, StartFailed


class Part:
    def __init__(self, name: str, journal: list[str], *, start_fails: bool = False, stop_fails: bool = False,
                 stop_hangs: bool = False, stubborn: bool = False) -> None:
        self.name, self.journal = name, journal
        self.start_fails, self.stop_fails, self.stop_hangs, self.stubborn = start_fails, stop_fails, stop_hangs, stubborn

    async def start(self) -> None:
        if self.start_fails:
            raise OSError(98, "address already in use")
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.stop_fails:
            raise RuntimeError("stop broke")
        while self.stop_hangs:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if not self.stubborn:
                    raise


async def test_stops_run_in_reverse_order_of_starts() -> None:
    journal: list[str] = []
    steps = Lifecycle(step_timeout=1.0, total_timeout=5.0)
    for name in "abc":
        part = Part(name, journal)
        await steps.start(name, part.start, part.stop)
    assert steps.started == ["a", "b", "c"]
    assert await steps.stop() is True
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert await steps.stop() is True and journal[-1] == "stop a", "a second stop has nothing left to do"


async def test_a_start_that_fails_stops_what_had_started_and_names_the_step() -> None:
    journal: list[str] = []
    steps = Lifecycle(step_timeout=1.0, total_timeout=5.0)
    a, b, broken, _late = (Part("a", journal), Part("b", journal), Part("api", journal, start_fails=True),
                          Part("late", journal))
    await steps.start("a", a.start, a.stop)
    steps.on_stop("file", lambda: journal.append("remove file"))
    await steps.start("b", b.start, b.stop)
    with pytest.raises(StartFailed) as failed:
        await steps.start("api", broken.start, broken.stop)
    assert failed.value.step == "api" and isinstance(failed.value.cause, OSError)
    assert "address already in use" in str(failed.value)
    assert journal == ["start a", "start b", "stop b", "remove file", "stop a"]
    assert "stop api" not in journal and "start late" not in journal
    assert steps.started == []


async def test_a_stop_step_that_raises_does_not_skip_the_others(caplog) -> None:
    journal: list[str] = []
    steps = Lifecycle(step_timeout=1.0, total_timeout=5.0)
    for part in (Part("a", journal), Part("b", journal, stop_fails=True), Part("c", journal)):
        await steps.start(part.name, part.start, part.stop)
    assert await steps.stop() is False
    assert journal[-3:] == ["stop c", "stop b", "stop a"]
    assert steps.unfinished == ["b"]
    assert "stopping b failed" in caplog.text and "stop broke" in caplog.text


@pytest.mark.parametrize("stubborn", [False, True], ids=["cancellable", "ignores-cancel"])
async def test_a_hanging_stop_step_is_abandoned_at_its_bound_and_the_rest_still_run(stubborn: bool) -> None:
    journal: list[str] = []
    steps = Lifecycle(step_timeout=0.3, total_timeout=5.0)
    hanging = Part("chain", journal, stop_hangs=True, stubborn=stubborn)
    for part in (Part("peers", journal), hanging, Part("api", journal)):
        await steps.start(part.name, part.start, part.stop)
    began = time.monotonic()
    assert await steps.stop() is False
    took = time.monotonic() - began
    assert journal[-3:] == ["stop api", "stop chain", "stop peers"]
    assert steps.unfinished == ["chain"]
    assert 0.3 <= took < 2.0, took
    hanging.stop_hangs = False   # let the abandoned task end with the test's loop


async def test_the_whole_stop_is_bounded_and_steps_past_the_bound_are_skipped(caplog) -> None:
    journal: list[str] = []
    steps = Lifecycle(step_timeout=0.3, total_timeout=0.5)
    parts = [Part("first", journal), Part("h1", journal, stop_hangs=True), Part("h2", journal, stop_hangs=True)]
    for part in parts:
        await steps.start(part.name, part.start, part.stop)
    began = time.monotonic()
    assert await steps.stop() is False
    assert time.monotonic() - began < 1.5
    assert steps.unfinished == ["h2", "h1", "first"]
    assert "not stopping first: the shutdown ran out" in caplog.text
    for part in parts:
        part.stop_hangs = False
