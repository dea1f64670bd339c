"""A snapshot's file is written by a worker thread while the event loop goes on: writing and syncing a big state
held every node's loop at the same height. Kept: the blocks it was made from are synced before it, the blocks
it covers are compacted only once it is on disk, one is written at a time (the newest waiting one next), a
failed write costs that snapshot only, and stop waits for the one being written."""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from exchange.chain.types.blocks import Block, Commit, Header
from exchange.chain.store.durability import BlockDurability, UnsavedBlock
from exchange.chain.store.block_store import ChainStore
from storage import StorageError


def _block(height: int) -> tuple[Block, Commit]:
    header = Header("c" * 64, height, 1_000 + height, os.urandom(32), bytes(32), bytes(32), bytes(32),
                    Block.txs_hash([]), None)
    block = Block(header, [])
    return block, Commit(height, 0, block.id, ((0, bytes(64)),))


class GatedStore(ChainStore):
    """The real store; its snapshot writes wait for `gate` (in the worker thread), and what it did is recorded."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, keep_blocks=2)
        self.gate = threading.Event()
        self.calls: list[str] = []
        self.fail_next_write = False

    def sync_blocks(self) -> None:
        self.calls.append("sync_blocks")
        super().sync_blocks()

    def write_snapshot(self, height: int, data: bytes) -> None:
        here = threading.current_thread() is threading.main_thread()
        self.calls.append(f"write {height} in {'the caller' if here else 'thread'}")
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail_next_write:
            self.fail_next_write = False
            raise StorageError("io", "disk full (injected)")
        super().write_snapshot(height, data)

    def snapshot_written(self, height: int) -> None:
        self.calls.append(f"written {height}")
        super().snapshot_written(height)


def _durability(store: ChainStore) -> BlockDurability:
    return BlockDurability(store, clock=lambda: 0.0, on_saved=lambda entry: None)


def _add_blocks(durability: BlockDurability, heights: range) -> None:
    for height in heights:
        block, commit = _block(height)
        durability.add_block(UnsavedBlock(block, commit, None, durable=True))  # type: ignore[arg-type]


def test_the_loop_goes_on_while_a_snapshot_is_written_and_compaction_waits_for_it(tmp_path):
    store = GatedStore(tmp_path)
    durability = _durability(store)

    async def scenario() -> None:
        _add_blocks(durability, range(1, 11))
        durability.add_snapshot(10, b"state at ten" * 1000)
        # the gate is shut: the write waits in its thread (in the loop it would hold it until the gate's timeout),
        # and the loop still appends blocks
        _add_blocks(durability, range(11, 13))
        assert store.last_height == 12 and store.snapshot_heights() == []
        assert store.first_height == 1, "nothing compacted before the snapshot is on disk"
        durability.add_snapshot(12, b"state at twelve" * 1000)      # waits for the one being written
        assert [c for c in store.calls if c.startswith("write")] == ["write 10 in thread"]
        store.gate.set()
        await durability.finish_snapshot()
        assert store.snapshot_heights() == [12, 10]
        writes = [c for c in store.calls if not c.startswith("sync")]
        assert writes == ["write 10 in thread", "written 10", "write 12 in thread", "written 12"], store.calls
        # each write came after a sync of the blocks it was made from
        assert store.calls[store.calls.index("write 10 in thread") - 1] == "sync_blocks"
        assert store.calls.index("write 12 in thread") > store.calls.index("written 10") \
            and store.calls[store.calls.index("write 12 in thread") - 1] == "sync_blocks"
        assert store.first_height == 12 - store.keep_blocks, "compacted once it was written"
        assert store.load_snapshot() == (12, b"state at twelve" * 1000)

    asyncio.run(scenario())


def test_a_failed_write_loses_that_snapshot_only(tmp_path, caplog):
    store = GatedStore(tmp_path)
    durability = _durability(store)
    store.gate.set()

    async def scenario() -> None:
        _add_blocks(durability, range(1, 6))
        store.fail_next_write = True
        durability.add_snapshot(5, b"five")
        await durability.finish_snapshot()
        assert store.snapshot_heights() == [] and "written 5" not in store.calls
        assert store.first_height == 1
        _add_blocks(durability, range(6, 8))
        durability.add_snapshot(7, b"seven")
        await durability.finish_snapshot()
        assert store.snapshot_heights() == [7]

    asyncio.run(scenario())
    assert "could not save the snapshot at height 5" in caplog.text


def test_without_an_event_loop_the_snapshot_is_saved_at_once(tmp_path):
    store = GatedStore(tmp_path)
    store.gate.set()
    durability = _durability(store)
    _add_blocks(durability, range(1, 4))
    durability.add_snapshot(3, b"three")
    assert store.snapshot_heights() == [3] and "write 3 in the caller" in store.calls


def test_a_snapshot_waits_for_its_block(tmp_path):
    store = GatedStore(tmp_path)
    store.gate.set()
    durability = _durability(store)

    async def scenario() -> None:
        _add_blocks(durability, range(1, 4))
        durability.add_snapshot(5, b"five")         # taken at 5, block 5 not stored yet
        await durability.finish_snapshot()
        assert store.snapshot_heights() == []
        _add_blocks(durability, range(4, 6))
        await durability.finish_snapshot()
        assert store.snapshot_heights() == [5]

    asyncio.run(scenario())
