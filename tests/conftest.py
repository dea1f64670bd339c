"""Shared fixtures (`cluster` starts real exchange-node processes and always cleans them up), and the tiers.

The suite runs in two tiers (Makefile: `make test-fast`, `make test`):
- the fast tier: everything in this process, no child process, namespace or browser (unit, simulator);
- the real-process tier: tests marked with one of PROCESS_MARKS, or `slow`.

Markers are put where they are true without anyone remembering them: every test under
tests/integration is `integration` (they start exchange-node processes) and every test under
tests/interop is `interop` (Node.js Grenache); a test using the `cluster` or `chain3` fixture is
`integration`, one using the Grenache fixtures is `interop`; a test that builds namespaces (`NetnsLan`,
`lan_or_skip`) or starts chromium, itself or in a fixture, is `netns` or `browser`. `process` and `slow`
are written on the tests themselves. What keeps them true: while a test runs, an audit hook watches
for a child process (subprocess, fork, exec, multiprocessing's spawn) and fails a test that starts
one without a PROCESS_MARKS marker, so a test that spawns cannot slip into the fast tier.
"""
from __future__ import annotations

import inspect
import multiprocessing.util
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster

TESTS = Path(__file__).resolve().parent

# A test carrying one of these may start processes; the fast tier deselects them all, and `slow`.
PROCESS_MARKS = ("integration", "interop", "netns", "browser", "process", "container", "soak")
FAST_EXCLUDED = (*PROCESS_MARKS, "slow")

BY_FOLDER = {"integration": "integration", "interop": "interop"}
BY_FIXTURE = {"cluster": "integration", "chain3": "integration",
              "grapes": "interop", "node_worker": "interop", "require_node": "interop"}
# a call in the test or in one of its fixtures that builds namespaces or starts chromium
BY_CALL = {"NetnsLan(": "netns", "lan_or_skip(": "netns", "sync_playwright(": "browser"}

# The real-process tier hands whole files to its workers in collection order (--dist loadfile, with
# --no-loadscope-reorder: by default xdist sorts the files by their number of tests instead, which put these
# one-test files last): the longest files go first, so neither worker starts one of them when the other is
# nearly done, and what is left at the end is short (the bit-flip files, each restarting nodes over and over on
# its own CPU, not next to each other). Seconds of one worker each, measured alone on 2 cores
# (load 1 to 4): bench smoke 212, seat attacks 124, partitions 90, bit flips in block logs 85, in the WAL 74,
# seats 72, chain attacks 64, NAT traversal 63, the lone node's bit flips 57, DHT 56, console 50, outbox bit
# flips 49, flood memory 48, cancel-all 45, kill -9 37, DHT simulator 36, flood 33; every other file under 30. The fast tier's
# longest, the crash enumeration (76 s), goes first there for the same reason.
LONGEST_FIRST = ("unit/storage/test_chain_crash.py",
                 "unit/bench/test_smoke.py", "integration/test_seat_attacks.py", "integration/test_chain_partitions.py",
                 "integration/test_storage_bitflips.py", "integration/test_seats.py",
                 "integration/test_storage_bitflips_wal.py", "integration/test_chain_attacks.py",
                 "integration/test_nat_traversal.py",
                 "integration/test_storage_bitflips_solo.py", "integration/test_dht.py",
                 "integration/test_console_browser.py", "integration/test_storage_bitflips_outbox.py",
                 "integration/test_flood_memory.py", "integration/test_cancel_all.py",
                 "integration/test_storage_kill9.py", "unit/p2p/test_dht_sim.py",
                 "integration/test_flood_orders.py")

# audit events that start another program (multiprocessing's spawn and forkserver raise none: wrapped below)
SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system",
                          "os.exec"})
_running: list[Any] = []       # the test item whose setup, call or teardown is running (this process only)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def snapshots_built_plain_too(monkeypatch):
    """Every state snapshot a test encodes in this process is also built the plain way and must be the same bytes:
    the snapshot joins rows it kept packed (exchange/app/packed_rows.py), and a kept row gone stale would change
    the certified digest. A failure names the height."""
    from exchange.app import snapshot
    from tests.snapshot_reference import plain_snapshot

    joined = snapshot._encode_state

    def checked(state):
        parts = joined(state)
        if b"".join(parts) != plain_snapshot(state):
            raise AssertionError(f"the snapshot of height {state.height} joined from kept rows is not the plain one")
        return parts
    monkeypatch.setattr(snapshot, "_encode_state", checked)


def tier_marks(item: pytest.Item) -> set[str]:
    """The markers the folder and the fixtures of a test imply."""
    marks = set()
    rel = Path(str(item.path)).resolve().relative_to(TESTS).parts
    if rel and rel[0] in BY_FOLDER:
        marks.add(BY_FOLDER[rel[0]])
    for name in getattr(item, "fixturenames", ()):
        if name in BY_FIXTURE:
            marks.add(BY_FIXTURE[name])
    for source in _sources(item):
        marks.update(mark for call, mark in BY_CALL.items() if call in source)
    return marks


def _sources(item: pytest.Item) -> list[str]:
    """The source of the test function and of the fixtures it uses (the test's own module's and conftests')."""
    functions: list[Any] = [getattr(item, "function", None)]     # None when the item is no function
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        functions.extend(d.func for d in defs)
    sources = []
    for function in functions:
        try:
            sources.append(inspect.getsource(function))
        except (TypeError, OSError):
            pass
    return sources


def may_start_processes(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) for name in PROCESS_MARKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in sorted(tier_marks(item)):
            if not item.get_closest_marker(name):
                item.add_marker(name)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.path)).resolve().relative_to(TESTS).as_posix(), len(rank)))


def _spawned(what: str) -> None:
    if _running and not may_start_processes(_running[-1]):
        item = _running[-1]
        item.stash.setdefault(_SPAWNS, []).append(what)
        raise RuntimeError(f"{item.nodeid} starts a process ({what}) but carries none of the markers "
                           f"{', '.join(PROCESS_MARKS)}: the fast tier runs no process; mark it (tests/conftest.py)")


def _audit(event: str, args: tuple) -> None:
    if event in SPAWN_EVENTS and _running:
        _spawned(f"{event} {str(args[:2])[:120]}")


_SPAWNS = pytest.StashKey[list]()
sys.addaudithook(_audit)
_spawnv_passfds = multiprocessing.util.spawnv_passfds


def _spawnv_watched(path, args, passfds):       # multiprocessing's spawn and forkserver start children here
    _spawned(f"multiprocessing {path}")
    return _spawnv_passfds(path, args, passfds)


multiprocessing.util.spawnv_passfds = _spawnv_watched


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()
