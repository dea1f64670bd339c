"""Snapshots encoded in a forked child (exchange/chain/store/snapshot_fork.py): the event loop goes on while the child
encodes the state as it was at the fork; the digest and bytes come back whole; a child that dies loses its
snapshot loudly; nothing is left running or unreaped at close."""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import time

import pytest

from exchange.chain.store.snapshot_fork import THAW_EVERY, ForkedSnapshots
from exchange.chain.state.snapshot_maker import SnapshotLost, snapshot_digest

pytestmark = pytest.mark.process        # it forks


def _slow_encoder(state: dict[str, int], seconds: float, size: int = 3_000_000) -> list[bytes]:
    time.sleep(seconds)                 # in the child: the parent's loop must not wait for this
    return [bytes([state["value"] % 256]) * (size // 2), bytes([state["value"] % 256]) * (size - size // 2)]


async def test_the_loop_goes_on_while_a_child_encodes_the_state_as_it_was_at_the_fork():
    ready: list[int] = []
    maker = ForkedSnapshots(lambda: ready.append(1))
    maker.live = True
    state = {"value": 7}
    started = time.monotonic()
    maker.start(10, lambda: _slow_encoder(state, 0.4))
    forked_in = time.monotonic() - started
    state["value"] = 9                  # the parent moves on; the child saw 7
    ticks = 0
    while not ready:
        await asyncio.sleep(0.01)
        ticks += 1
    assert forked_in < 0.2 and ticks >= 20, (forked_in, ticks)     # the loop ran throughout the 0.4 s
    assert maker.held.count == 1 and 0 < maker.held.last_seconds <= forked_in, "the fork's hold is measured"
    expected = bytes([7]) * 3_000_000
    assert maker.digest(10) == snapshot_digest(expected)
    assert maker.take_ready() == [(10, expected)]
    assert maker.take_ready() == []


async def test_a_digest_asked_for_before_the_child_is_done_waits_for_it():
    maker = ForkedSnapshots()
    maker.live = True
    maker.start(20, lambda: _slow_encoder({"value": 3}, 0.2, 1000))
    assert maker.digest(20) == snapshot_digest(bytes([3]) * 1000)
    assert maker.held.count == 2 and maker.held.longest_seconds >= 0.1, "the wait held the loop, and says so"
    assert maker.take_ready() == [(20, bytes([3]) * 1000)]


async def test_a_child_that_dies_loses_its_snapshot_and_says_how():
    maker = ForkedSnapshots()
    maker.live = True
    maker.start(30, lambda: _slow_encoder({"value": 1}, 5.0))
    (job,) = maker._jobs.values()
    os.kill(job.pid, signal.SIGKILL)
    with pytest.raises(SnapshotLost, match="height 30 was lost.*status -9"):
        maker.digest(30)
    assert maker.take_ready() == []


async def test_close_ends_the_children_under_way_and_reaps_them():
    maker = ForkedSnapshots()
    maker.live = True
    maker.start(40, lambda: _slow_encoder({"value": 1}, 30.0))
    (job,) = maker._jobs.values()
    maker.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, os.WNOHANG)         # reaped already
    with pytest.raises(SnapshotLost, match="the node stopped"):
        maker.digest(40)


def test_before_the_node_is_live_or_outside_a_loop_the_snapshot_is_encoded_at_once():
    maker = ForkedSnapshots()
    maker.start(50, lambda: _slow_encoder({"value": 97}, 0.05, 3))
    assert maker.digest(50) == snapshot_digest(b"aaa") and maker.take_ready() == [(50, b"aaa")]
    assert maker.held.count == 1 and maker.held.last_seconds >= 0.05, "encoded at once: the loop held throughout"
    maker.live = True
    maker.start(60, lambda: [b"de", b"f"])  # no running loop here
    assert maker.forked == 0 and maker.digest(60) == snapshot_digest(b"def")


async def test_each_fork_freezes_the_long_lived_objects_and_every_few_thaw_them():
    maker = ForkedSnapshots()
    maker.live = True
    gc.unfreeze()
    try:
        for n in range(1, THAW_EVERY + 1):
            maker.start(n, lambda: [b"x"])
            maker.digest(n)
            assert (gc.get_freeze_count() > 0) == (n < THAW_EVERY), n
    finally:
        gc.unfreeze()


async def test_a_child_that_hangs_is_given_up_when_its_digest_is_due_and_says_so():
    maker = ForkedSnapshots()
    maker.live = True
    maker.digest_wait = 0.3
    maker.start(70, lambda: _slow_encoder({"value": 1}, 30.0))
    (job,) = maker._jobs.values()
    started = time.monotonic()
    with pytest.raises(SnapshotLost, match="height 70 was lost.*had not finished 0.3 s after it was due"):
        maker.digest(70)
    assert 0.3 <= time.monotonic() - started < 5.0
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, os.WNOHANG)         # killed and reaped
