"""A live node's snapshots (exchange/chain/store/snapshot_live.py): gathered in the event loop as pieces while the last
snapshot was small enough, forked otherwise; a worker thread joins the pieces and digests them, and the bytes
reach the store through the loop; a digest asked for early waits for the worker; a failed worker loses the
snapshot loudly."""
from __future__ import annotations

import asyncio
import threading
from typing import Callable, Sequence

import pytest

from exchange.chain.store import snapshot_live as live
from exchange.chain.store.snapshot_live import LiveSnapshots
from exchange.chain.state.snapshot_maker import LoopHeld, SnapshotLost, snapshot_digest


class RecordedForks:
    """Stands in for ForkedSnapshots: records what it was asked to fork and hands the bytes back at once."""

    def __init__(self) -> None:
        self.live = False
        self.held = LoopHeld()
        self.started: list[int] = []
        self.frozen = 0
        self._ready: list[tuple[int, bytes]] = []
        self._digests: dict[int, bytes] = {}

    def start(self, height: int, parts: Callable[[], Sequence[bytes]]) -> None:
        data = b"".join(parts())
        self.started.append(height)
        self._digests[height] = snapshot_digest(data)
        self._ready = [(height, data)]
        self.held.add(0.0, "fork")

    def freeze_long_lived(self) -> None:
        self.frozen += 1

    def known(self, height: int, data: bytes) -> None:
        self._digests[height] = snapshot_digest(data)

    def digest(self, height: int) -> bytes:
        if height not in self._digests:
            raise SnapshotLost(f"no snapshot of height {height}")
        return self._digests[height]

    def take_ready(self) -> list[tuple[int, bytes]]:
        ready, self._ready = self._ready, []
        return ready

    def close(self) -> None:
        pass


def live_maker() -> tuple[LiveSnapshots, RecordedForks, asyncio.Event]:
    ready = asyncio.Event()
    maker = LiveSnapshots(ready.set, spread_seconds=0.0)
    forks = maker.forks = RecordedForks()       # type: ignore[assignment]
    maker.held = forks.held
    maker.live = True
    return maker, forks, ready


async def test_a_snapshot_is_gathered_in_the_loop_then_joined_and_digested_by_a_worker(monkeypatch):
    maker, forks, ready = live_maker()
    worked_in: list[str] = []

    def join_and_digest(pieces):
        worked_in.append(threading.current_thread().name)
        return live_join(pieces)
    live_join = live._join_and_digest
    monkeypatch.setattr(live, "_join_and_digest", join_and_digest)
    gathered: list[str] = []

    def parts() -> list[bytes]:
        gathered.append(threading.current_thread().name)
        return [b"state ", b"at ", b"10"]
    try:
        maker.start(10, parts)
        assert forks.started == [] and maker.joined == 1 and maker.held.last_way == "join" and maker.held.count == 1
        assert forks.frozen == 1, "the long-lived objects are frozen as they are before a fork"
        await asyncio.wait_for(ready.wait(), 5)
        assert gathered == [threading.current_thread().name] and worked_in[0].startswith("snapshot-join")
        assert maker.take_ready() == [(10, b"state at 10")] and maker.take_ready() == []
        assert maker.digest(10) == snapshot_digest(b"state at 10")
    finally:
        maker.close()


async def test_a_digest_asked_for_before_the_worker_is_done_waits_for_it(monkeypatch):
    maker, _, ready = live_maker()
    release = threading.Event()
    real = live._join_and_digest

    def slow(pieces):
        release.wait(5)
        return real(pieces)
    monkeypatch.setattr(live, "_join_and_digest", slow)
    try:
        maker.start(10, lambda: [b"a", b"b"])
        threading.Timer(0.05, release.set).start()
        assert maker.digest(10) == snapshot_digest(b"ab"), "waited for the worker"
        assert maker.take_ready() == [(10, b"ab")] and ready.is_set(), "and the store has it at once"
        await asyncio.sleep(0)          # the worker's own call back into the loop finds nothing left to do
        assert maker.take_ready() == []
    finally:
        maker.close()


async def test_after_a_snapshot_over_the_size_to_gather_the_next_is_forked_and_after_a_small_one_gathered_again():
    maker, forks, _ = live_maker()
    maker.join_max_bytes = 1000
    maker.start(10, lambda: [b"x" * 5000])
    assert maker.joined == 1, "the first is gathered: nothing says yet how big the state is"
    maker.digest(10)
    maker.start(20, lambda: [b"y" * 10])
    assert forks.started == [20] and maker.joined == 1, "the last was over the size: forked, although small"
    assert maker.digest(20) == snapshot_digest(b"y" * 10) and maker.digest(10) == snapshot_digest(b"x" * 5000)
    assert maker.take_ready() == [(20, b"y" * 10)], "only the newest waits for the store"
    maker.start(30, lambda: [b"z" * 1000])
    assert forks.started == [20] and maker.joined == 2, "the forked one was small: gathered again"
    maker.close()


def test_before_the_node_is_live_or_outside_a_loop_the_fork_path_decides():
    maker, forks, _ = live_maker()
    maker.start(10, lambda: [b"a"])
    assert forks.started == [10], "outside a running loop"
    maker.live = False
    assert forks.live is False


@pytest.mark.parametrize("spread", [0.0, 60.0])     # the worker failed, or the join done at once when due
async def test_a_join_that_failed_loses_the_snapshot_and_says_so(monkeypatch, caplog, spread):
    maker, _, ready = live_maker()
    maker.spread_seconds = spread
    tried = threading.Event()

    def broken(pieces):
        tried.set()
        raise MemoryError("no room")
    monkeypatch.setattr(live, "_join_and_digest", broken)
    try:
        maker.start(10, lambda: [b"a"])
        if spread == 0.0:                   # handed over at the loop's next turn, and failed in the worker
            assert await asyncio.to_thread(tried.wait, 5)
        with pytest.raises(SnapshotLost, match="height 10.*no room"):
            maker.digest(10)
        assert not ready.is_set() and maker.take_ready() == []
        assert "the snapshot of height 10 was lost" in caplog.text
    finally:
        maker.close()


async def test_only_the_newest_are_kept():
    maker, _, _ = live_maker()
    for height in range(10, 200, 10):
        maker.start(height, lambda: [b"a"])
    assert len(maker._joining) <= 4
    with pytest.raises(SnapshotLost):
        maker.digest(10)
    assert maker.digest(190) == snapshot_digest(b"a")
    maker.close()


async def test_the_pieces_reach_the_worker_at_a_random_moment_within_the_spread(monkeypatch):
    maker, _, ready = live_maker()
    maker.spread_seconds = 0.2
    handed: list[float] = []
    real = live._join_and_digest

    def timed(pieces):
        handed.append(loop.time())
        return real(pieces)
    monkeypatch.setattr(live, "_join_and_digest", timed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        maker.start(10, lambda: [b"a"])
        assert handed == [], "not at the snapshot's height itself"
        await asyncio.wait_for(ready.wait(), 5)
        assert 0.0 <= handed[0] - started <= 0.2 + 0.05
    finally:
        maker.close()


async def test_a_digest_due_before_the_worker_was_handed_the_pieces_joins_them_at_once(monkeypatch):
    maker, _, ready = live_maker()
    maker.spread_seconds = 60.0
    try:
        maker.start(10, lambda: [b"a", b"b"])
        assert maker.digest(10) == snapshot_digest(b"ab")
        assert ready.is_set() and maker.take_ready() == [(10, b"ab")]
        assert maker._waiting == {}, "nothing left to hand over"
    finally:
        maker.close()
