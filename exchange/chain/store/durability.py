"""What must be on disk before what leaves: blocks final here and signed WAL records, written in order.

ChainService's pump hands this class every WAL record and every final block the core decides, and asks it
before a decision broadcast leaves. The rules it keeps:
- consecutive WAL records share one fsync, and nothing the pump carries out after them leaves before it;
- a block final here is appended before the next, and what it holds back (the decision broadcast, its
  snapshot, its epoch proof, the API's answers and the stream, through `on_saved`) is let out only once it
  is durable; a follower's block may skip the fdatasync (see `ChainService._committed`) and is synced within
  FOLLOWER_SYNC_INTERVAL;
- while a write fails, `disk_error` says why and the service holds its votes; each flush retries;
- a snapshot is written once the blocks it was made from are synced, in a worker thread (writing and syncing
  a big state would hold the event loop, on every node at the same height), one at a time, and the blocks it
  covers are compacted only once it is on disk.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from exchange.chain.types.blocks import Block, Commit
from exchange.chain.state.outcome import BlockOutcome
from exchange.chain.effects import ChainMessage
from exchange.chain.ports import ChainStore
from exchange.chain.consensus.tendermint import wal_record_height
from exchange.wire import Wire
from storage import StorageError

log = logging.getLogger("exchange.chain")

FOLLOWER_SYNC_INTERVAL = 1.0    # s a follower's certified blocks may stay unsynced


class UnsavedBlock:
    """A block final here and not yet durable, with what it holds back until it is."""

    __slots__ = ("block", "commit", "outcome", "held", "durable")

    def __init__(self, block: Block, commit: Commit, outcome: BlockOutcome, durable: bool) -> None:
        self.block = block
        self.commit = commit
        self.outcome = outcome
        self.held: list[ChainMessage] = []      # decision broadcasts
        self.durable = durable          # fdatasync'ed before anything it holds back is let out


class BlockDurability:
    """The blocks and WAL records not yet on disk, the disk's error, and the follower's deferred sync."""

    def __init__(self, store: ChainStore, clock: Callable[[], float],
                 on_saved: Callable[[UnsavedBlock], None]) -> None:
        self.store = store
        self.clock = clock
        self.on_saved = on_saved
        self.disk_error: StorageError | None = None    # a write consensus needs failed: the service holds its votes
        self.wal_top = 0            # the highest height with a signed record in the durable WAL
        self._blocks: list[UnsavedBlock] = []     # final here, not yet durable: nothing of them leaves
        self._wal: list[Wire] = []
        self._unsynced_since: float | None = None   # a follower's blocks appended without fdatasync since
        self._snapshot: tuple[int, bytes] | None = None     # taken, its block not yet stored (or one being written)
        self._writing: asyncio.Future[None] | None = None   # a snapshot's file being written by a worker thread

    @property
    def unsaved_blocks(self) -> int:
        return len(self._blocks)

    @property
    def wal_waiting(self) -> bool:
        """WAL records the pump took and has not written yet."""
        return bool(self._wal)

    def add_wal(self, record: Wire) -> None:
        self._wal.append(record)

    def add_block(self, entry: UnsavedBlock) -> None:
        self._blocks.append(entry)
        self.flush()

    def add_snapshot(self, height: int, data: bytes) -> None:
        """The snapshot of `height`: stored once its block is (the store syncs the blocks first, so a snapshot
        never outlives them); a newer one replaces one still waiting."""
        self._snapshot = (height, data)
        self._save_snapshot()

    def _save_snapshot(self) -> None:
        waiting = self._snapshot
        if waiting is None or self.store.last_height < waiting[0] or self._writing is not None:
            return
        self._snapshot = None
        height, data = waiting
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        try:
            if loop is None:
                self.store.save_snapshot(height, data)
                return
            self.store.sync_blocks()        # a snapshot never outlives the blocks it was made from
        except StorageError as exc:
            log.warning("could not save the snapshot at height %d: %s", height, exc)
            return
        writing = loop.run_in_executor(None, self.store.write_snapshot, height, data)
        self._writing = writing
        writing.add_done_callback(lambda done: self._written(height, done))

    def _written(self, height: int, done: asyncio.Future[None]) -> None:
        self._writing = None
        error = None if done.cancelled() else done.exception()
        if error is None and not done.cancelled():
            try:
                self.store.snapshot_written(height)
            except StorageError as exc:
                error = exc
        if isinstance(error, StorageError):
            log.warning("could not save the snapshot at height %d: %s", height, error)
        elif error is not None:     # a bug in the write must not end the node: the next snapshot tries again
            log.error("writing the snapshot at height %d failed", height, exc_info=error)
        self._save_snapshot()       # a newer one that came meanwhile

    async def finish_snapshot(self) -> None:
        """Once the snapshot being written (if any) is on disk: at stop, before the store closes."""
        while (writing := self._writing) is not None:
            await asyncio.wait([writing])   # `_written` was added first, so it ran before this wakes (it may start
                                            # the next waiting one)

    def hold(self, message: ChainMessage) -> bool:
        """Keep a decision broadcast behind the newest block not yet durable; False when none waits."""
        if not self._blocks:
            return False
        self._blocks[-1].held.append(message)
        return True

    def flush(self) -> None:
        """Write what waits, in order; on failure keep the rest for the next flush and say so once."""
        saved: list[UnsavedBlock] = []
        try:
            while self._blocks:
                entry = self._blocks[0]
                self.store.append_block(entry.block, entry.commit, entry.durable)
                if entry.durable:
                    self._unsynced_since = None
                elif self._unsynced_since is None:
                    self._unsynced_since = self.clock()
                saved.append(self._blocks.pop(0))
                if self.wal_top <= entry.block.height:     # a recovering node keeps the WAL of a later height
                    self.store.wal_height_done()
                    self.wal_top = 0
            if self._wal:
                records = self._wal
                self.store.wal_append_many(records)
                self._wal = []
                self.wal_top = max(self.wal_top, *(wal_record_height(r) or 0 for r in records))
        except StorageError as exc:
            if self.disk_error is None:
                log.error("disk write failed (%s): holding this node's votes until it works again; the rest of "
                          "the network goes on", exc)
            self.disk_error = exc
            return
        finally:
            for done in saved:
                self.on_saved(done)
            if saved:
                self._save_snapshot()
        if self.disk_error is not None:
            log.warning("disk writes work again: the blocks and the WAL are saved; voting again")
            self.disk_error = None

    def sync_follower_blocks(self, now: float | None = None) -> None:
        """fdatasync a follower's blocks appended without it, once FOLLOWER_SYNC_INTERVAL has passed (or now,
        when `now` is None: at stop)."""
        since = self._unsynced_since
        if since is None or (now is not None and now - since < FOLLOWER_SYNC_INTERVAL):
            return
        try:
            self.store.sync_blocks()
        except StorageError as exc:     # the records stay written; the next tick tries again
            log.warning("could not sync this follower's recent blocks: %s", exc)
            return
        self._unsynced_since = None
