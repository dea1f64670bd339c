"""The chain's writes in their worker thread (exchange/chain/durability.py): while a WAL record or a block is being
synced, the event loop goes on, and nothing that depends on the write leaves before it has landed."""
from __future__ import annotations

import asyncio
import threading
import time

from exchange.chain.durability import PUMP_BEHIND_EFFECTS
from storage.fs import FileHandle
from tests.faultyfs import FaultyFS
from tests.unit.storage.chain_node import ChainNode, Record

GATE_SECONDS = 10.0


class GatedFS(FaultyFS):
    """A disk whose fdatasyncs of the chain's blocks and WAL wait while the gate is shut (a slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.sync_seconds = 0.0                # every sync of the chain's logs takes this long (a slow disk)
        self.waiting = threading.Event()       # a sync is held at the gate
        self.synced_in: set[str] = set()       # the threads that synced the chain's logs

    def fdatasync(self, handle: FileHandle) -> None:
        if "/blocks/" in handle.path or "/wal/" in handle.path:
            self.synced_in.add(threading.current_thread().name)
            if not self.gate.is_set():
                self.waiting.set()
                assert self.gate.wait(GATE_SECONDS), "the test never opened the gate"
            time.sleep(self.sync_seconds)
        super().fdatasync(handle)


async def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_write_held_by_the_disk_holds_what_depends_on_it_and_not_the_event_loop():
    fs, record = GatedFS(), Record()
    node = await ChainNode.boot(fs, record, writes_in_thread=True)
    try:
        service = node.service
        await _until(lambda: not service.durability.writing)
        kind, tx = await node.place(1)
        assert kind == "accepted"
        fs.gate.clear()
        before = dict(record.decisions)
        started = time.monotonic()
        node.step(0.3)          # the core proposes and decides: its WAL records and its block wait at the gate
        stepped = time.monotonic() - started
        assert stepped < 1.0, f"the pump waited {stepped:.1f} s for the disk on the event loop"
        await asyncio.get_running_loop().run_in_executor(None, fs.waiting.wait, GATE_SECONDS)
        assert service.durability.writing, "no write was left running in the worker thread"
        ticks = 0
        for _ in range(20):             # the loop goes on while the disk holds the write
            await asyncio.sleep(0.01)
            ticks += 1
            node.pump()                 # a pump while the write runs carries nothing out of order
        assert ticks == 20
        assert record.decisions == before, "a decision left before its block was on disk"
        assert tx.id in record.waiting and not record.waiting[tx.id].done(), "an answer left before its block"
        fs.gate.set()
        await _until(lambda: len(record.decisions) > len(before) and not service.durability.writing)
        height = max(record.decisions)
        assert node.store.last_height >= height, "a decision broadcast for a block not stored"
        await _until(lambda: record.waiting[tx.id].done())
        node.collect_finals()
        assert tx.order_id(0) in record.finals
        assert fs.synced_in and all(name.startswith("chain-writes") for name in fs.synced_in), fs.synced_in
    finally:
        fs.gate.set()
        await node.stop()


async def test_a_failing_disk_is_tried_once_per_pump_in_the_thread_not_in_a_loop_of_its_own():
    """A write that fails in the thread resumes the pump (what follows is carried out: the votes held back), but
    that pump does not try the disk again: the next one does (a message, the tick), as inline."""
    fs, record = GatedFS(), Record()
    node = await ChainNode.boot(fs, record, writes_in_thread=True)
    try:
        service = node.service
        kind, _ = await node.place(1)
        assert kind == "accepted"
        fs.fail("fdatasync", path="/wal/", times=-1)
        node.step(0.3)
        await _until(lambda: service.disk_error is not None and not service.durability.writing)
        tried = fs.calls["fdatasync"]
        for _ in range(20):
            await asyncio.sleep(0.005)
        assert not service.durability.writing and fs.calls["fdatasync"] == tried, \
            f"the thread kept trying a failing disk on its own: {fs.calls['fdatasync'] - tried} more syncs"
        node.step(0.3)          # the next pump tries again, and fails again
        await _until(lambda: fs.calls["fdatasync"] > tried and not service.durability.writing)
        fs.clear_faults()
        node.step(0.3)
        await _until(lambda: service.disk_error is None and not service.durability.writing)
        await _until(lambda: len(record.decisions) >= 1)
    finally:
        await node.stop()


async def test_a_core_ahead_of_a_slow_disk_waits_for_it_instead_of_queueing_without_bound():
    """A lone validator decides on its own, faster than a slow disk takes its writes: past PUMP_BEHIND_EFFECTS
    effects waiting, the pump writes inline and holds the loop, so the core waits for the disk instead of
    running hundreds of heights ahead of what is stored, its effects in memory."""
    fs, record = GatedFS(), Record()
    fs.sync_seconds = 0.003
    node = await ChainNode.boot(fs, record, writes_in_thread=True)
    try:
        service = node.service
        most = lag = 0
        for n in range(150):
            kind, _ = await node.place(n)       # the API's wait for the outbox lets the loop turn once
            assert kind == "accepted"
            node.step(0.3)
            assert service.core is not None
            most = max(most, len(service._effects))
            lag = max(lag, service.core.height - node.store.last_height)
        # the bound plus what one step of the core adds at once (a height's effects); unbounded, ten times as many
        assert most <= 3 * PUMP_BEHIND_EFFECTS, f"{most} effects waited for the disk"
        assert lag <= 20, f"the core ran {lag} heights ahead of the stored blocks"
    finally:
        await node.stop()
