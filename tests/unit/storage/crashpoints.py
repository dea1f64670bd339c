"""Crash-point enumeration: run a workload on FaultyFS, crash it at every disk-changing operation in turn, and
check an invariant on every disk image such a crash could leave.

    def workload(fs: FaultyFS, history: History) -> None:     # or an async def
        ...                                                  # record what callers were told in `history`
    def check(disk: FaultyFS, history: History, stats: CrashStats) -> None:  # reopen `disk`, assert
        ...
    stats = enumerate_crashes(workload, check, seeds=range(4))

A clean run first counts the operations (`FaultyFS.points`) and keeps its history (`stats.clean_run`); then
for each point p in 0..count (count = crash after the last one) and each variant ("lose": only synced data
survives, "keep": everything written survives, and one random image per seed: unsynced writes lost, kept, cut
at a random byte or zero-filled from a sector, directory changes since the last directory fsync partly kept),
the workload runs again with `crash_at(p)`, once per point, and `check` judges `after_crash(...)` of each
variant (it leaves the crashed disk as it was), each with its own copy of the run's history. A failing check
raises AssertionError naming the point and the variant.
"""
from __future__ import annotations

import asyncio
import copy
import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Union

from tests.faultyfs import Crash, FaultyFS

Workload = Callable[[FaultyFS, "History"], Union[None, Awaitable[None]]]
Check = Callable[[FaultyFS, "History", "CrashStats"], None]


@dataclass
class History:
    """What the workload's callers were told: `attempted` before each write, `acked` once it returned,
    `failed` when it raised (and the error said nothing was kept), `unknown` when the outcome is unknown."""

    attempted: list[Any] = field(default_factory=list)
    acked: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)
    unknown: list[Any] = field(default_factory=list)
    crashed_at: str | None = None


@dataclass
class CrashStats:
    points: int = 0
    runs: int = 0
    crashes: int = 0
    findings: dict[str, int] = field(default_factory=dict)  # counters a check may bump via `note`
    clean_run: History = field(default_factory=History)  # what the workload did with no crash


    def note(self, what: str) -> None:
        self.findings[what] = self.findings.get(what, 0) + 1


def run_workload(workload: Workload, fs: FaultyFS, history: History) -> None:
    """Run until it ends or the simulated power cut."""
    try:
        if inspect.iscoroutinefunction(workload):
            asyncio.run(workload(fs, history))
        else:
            workload(fs, history)
    except Crash as crash:
        history.crashed_at = str(crash)


def clean_run(workload: Workload) -> tuple[int, History]:
    """(disk-changing operations, history) of a run without a crash."""
    fs = FaultyFS()
    history = History()
    run_workload(workload, fs, history)
    assert history.crashed_at is None, "the workload crashed without being told to"
    return fs.points, history


def variants(seeds: Iterable[int], hostile: bool) -> list[tuple[str, int, bool]]:
    return [("lose", 0, False), ("keep", 0, False)] + [("random", seed, hostile) for seed in seeds]


def enumerate_crashes(workload: Workload, check: Check, *,
                      seeds: Iterable[int] = range(4), hostile: bool = False,
                      points: Iterable[int] | None = None, part: tuple[int, int] = (0, 1)) -> CrashStats:
    """Crash `workload` at every point (or the given ones) and run `check` on each resulting disk; `part` (i, n)
    takes every n-th point from the i-th, so n tests can share one enumeration."""
    points_in_run, history = clean_run(workload)
    stats = CrashStats(points=points_in_run, clean_run=history)
    chosen = range(part[0], stats.points + 1, part[1]) if points is None else points
    for point in chosen:
        fs = FaultyFS()
        fs.crash_at(point)
        run = History()
        run_workload(workload, fs, run)
        for mode, seed, rough in variants(seeds, hostile):
            history = copy.deepcopy(run)        # a check may change what it is given
            stats.runs += 1
            stats.crashes += history.crashed_at is not None
            disk = fs.after_crash(seed, mode=mode, hostile=rough)
            try:
                check(disk, history, stats)
            except AssertionError as exc:
                raise AssertionError(f"crash at point {point} ({history.crashed_at or 'after the workload'}), "
                                     f"image {mode} seed {seed}: {exc}") from exc
    return stats
