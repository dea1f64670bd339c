"""The chain's writes in their worker thread (exchange/chain/durability.py): while a WAL record or a block is being
synced, the event loop goes on, and nothing that depends on the write leaves before it has landed."""
from __future__ import annotations

import asyncio
import threading
import time

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
        self.waiting = threading.Event()       # a sync is held at the gate
        self.synced_in: set[str] = set()       # the threads that synced the chain's logs

    def fdatasync(self, handle: FileHandle) -> None:
        if "/blocks/" in handle.path or "/wal/" in handle.path:
            self.synced_in.add(threading.current_thread().name)
            if not self.gate.is_set():
                self.waiting.set()
                assert self.gate.wait(GATE_SECONDS), "the test never opened the gate"
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
