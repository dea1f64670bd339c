"""What must be on disk before what leaves: blocks final here and signed WAL records, written in order.

ChainService's pump hands this class every WAL record and every final block the core decides, and asks it
before a decision broadcast leaves. The rules it keeps:
- consecutive WAL records share one fsync, and nothing the pump carries out after them leaves before it;
- a block final here is appended before the next, and what it holds back (the decision broadcast, its
  snapshot, its epoch proof, the API's answers and the stream, through `on_saved`) is let out only once it
  is durable; a follower's block may skip the fdatasync (see `ChainService._committed`) and is synced within
  FOLLOWER_SYNC_INTERVAL;
- a write that syncs runs in a worker thread of its own (`in_thread`), one at a time: the pump stops at it
  and resumes once it has landed, so the order above holds while the event loop reads, checks and answers
  everyone else meanwhile (an fdatasync on the loop held every link's messages behind it: docs/tradeoffs.md,
  "Durability"); a write with nothing to sync (a follower's block) runs inline;
- the core can run ahead of a pump that waits for the thread (a lone validator decides on its own; others
  decide without our votes), so once PUMP_BEHIND_EFFECTS effects wait, writes run inline again: holding the
  loop as a disk on the loop did, they bound what waits in memory to what the disk can take;
- while a write fails, `disk_error` says why and the service holds its votes; each pump tries the disk again,
  except the one a failed write in the thread resumes (else the thread would retry in a loop of its own);
- a snapshot is written once the blocks it was made from are synced, in a worker thread (writing and syncing
  a big state would hold the event loop, on every node at the same height), one at a time, and the blocks it
  covers are compacted only once it is on disk.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from exchange.chain.blocks import Block, Commit
from exchange.chain.chainstate import BlockOutcome
from exchange.chain.effects import ChainMessage
from exchange.chain.ports import ChainStore
from exchange.chain.tendermint import wal_record_height
from exchange.wire import Wire
from storage import StorageError
from storage.errors import IO_ERROR

log = logging.getLogger("exchange.chain")

FOLLOWER_SYNC_INTERVAL = 1.0    # s a follower's certified blocks may stay unsynced
PUMP_BEHIND_EFFECTS = 64        # effects waiting for a write past which the pump writes inline (the core is ahead)


class UnsavedBlock:
    """A block final here and not yet durable, with what it holds back until it is."""

    __slots__ = ("block", "commit", "outcome", "held", "durable")

    def __init__(self, block: Block, commit: Commit, outcome: BlockOutcome, durable: bool) -> None:
        self.block = block
        self.commit = commit
        self.outcome = outcome
        self.held: list[ChainMessage] = []      # decision broadcasts
        self.durable = durable          # fdatasync'ed before anything it holds back is let out


@dataclass(frozen=True, slots=True)
class _Written:
    """What one write stored (the first `blocks` waiting, and the WAL records taken if `wal`), and its error."""
    blocks: int
    wal: bool
    wal_top: int
    synced_blocks: bool         # the last block stored was fdatasync'ed
    unsynced_blocks: bool       # a block was stored without it
    error: StorageError | None


class BlockDurability:
    """The blocks and WAL records not yet on disk, the disk's error, and the follower's deferred sync."""

    def __init__(self, store: ChainStore, clock: Callable[[], float],
                 on_saved: Callable[[UnsavedBlock], None], *, in_thread: bool = False) -> None:
        self.store = store
        self.clock = clock
        self.on_saved = on_saved
        self.in_thread = in_thread      # writes that sync run in a worker thread (else inline, as a test steps)
        self._executor: ThreadPoolExecutor | None = None
        self._flight: asyncio.Future[_Written] | None = None    # a write running in the worker thread
        self._landed_then: list[Callable[[], None]] = []        # what to call once it has landed
        self._failed_landing = False    # a write in the thread failed: the pump it resumes does not try again
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

    @property
    def waiting(self) -> bool:
        """Blocks or WAL records the pump took and has not written yet (or that are being written)."""
        return bool(self._blocks or self._wal)

    @property
    def writing(self) -> bool:
        """A write runs in the worker thread: the pump waits for it to land."""
        return self._flight is not None

    def add_wal(self, record: Wire) -> None:
        self._wal.append(record)

    def add_block(self, entry: UnsavedBlock) -> None:
        """Written by the pump's next flush, before the effect after the one that decided it."""
        self._blocks.append(entry)

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

    def flush(self, then: Callable[[], None] | None = None, *, defer: bool = True) -> bool:
        """Write what waits, in order; on failure keep the rest for the next flush and say so once. True when that
        is done (also when it failed: `waiting` says so); False while the write runs in the worker thread, or an
        earlier one still does: `then` is called once it has landed. `defer=False` writes inline: the pump is
        behind the core, and a write that holds the loop is what keeps the core from running further ahead."""
        if self._flight is not None:
            if then is not None:
                self._landed_then.append(then)
            return False
        if self._failed_landing:    # the disk is tried once per pump, as inline: the next pump tries it again
            self._failed_landing = False
            return True
        if not self._blocks and not self._wal:
            return True
        blocks, wal, wal_top = list(self._blocks), list(self._wal), self.wal_top
        try:
            loop = asyncio.get_running_loop() if self.in_thread else None
        except RuntimeError:
            loop = None
        if loop is None or not defer or not (wal or any(entry.durable for entry in blocks)):
            self._landed(self._write(blocks, wal, wal_top))    # nothing to wait for (or no loop to go on)
            return True
        if self._executor is None:     # its own thread: a snapshot being written must not hold a vote's record
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chain-writes")
        flight = loop.run_in_executor(self._executor, self._write, blocks, wal, wal_top)
        self._flight = flight
        if then is not None:
            self._landed_then.append(then)
        flight.add_done_callback(self._flight_landed)
        return False

    def _write(self, blocks: list[UnsavedBlock], wal: list[Wire], wal_top: int) -> _Written:
        """The store's part of a flush, on the loop or in the worker thread: it touches nothing but the store."""
        stored = 0
        synced = unsynced = wal_written = False
        try:
            for entry in blocks:
                self.store.append_block(entry.block, entry.commit, entry.durable)
                synced, unsynced = entry.durable, unsynced or not entry.durable
                stored += 1
                if wal_top <= entry.block.height:     # a recovering node keeps the WAL of a later height
                    self.store.wal_height_done()
                    wal_top = 0
            if wal:
                self.store.wal_append_many(wal)
                wal_written = True
                wal_top = max(wal_top, *(wal_record_height(r) or 0 for r in wal))
        except StorageError as exc:
            return _Written(stored, wal_written, wal_top, synced, unsynced, exc)
        return _Written(stored, wal_written, wal_top, synced, unsynced, None)

    def _flight_landed(self, flight: asyncio.Future[_Written]) -> None:
        self._flight = None
        if flight.cancelled():
            written = _Written(0, False, self.wal_top, False, False, StorageError(IO_ERROR, "the write was cancelled"))
        elif (error := flight.exception()) is not None:
            if not isinstance(error, Exception):    # a simulated crash, or the interpreter stopping: not ours to eat
                raise error
            log.error("the chain's write failed: %s", error, exc_info=error)   # a bug: kept waiting, tried again
            written = _Written(0, False, self.wal_top, False, False, StorageError(IO_ERROR, f"write failed: {error}"))
        else:
            written = flight.result()
        self._failed_landing = written.error is not None
        self._landed(written)
        then, self._landed_then = self._landed_then, []
        for call in then:
            call()

    def _landed(self, written: _Written) -> None:
        """A write's outcome, on the loop: drop what it stored from what waits, let out what that held back."""
        saved = self._blocks[:written.blocks]
        del self._blocks[:written.blocks]
        if written.wal:
            self._wal = []
        self.wal_top = written.wal_top
        if written.synced_blocks:
            self._unsynced_since = None
        if written.unsynced_blocks and not written.synced_blocks and self._unsynced_since is None:
            self._unsynced_since = self.clock()
        for done in saved:
            self.on_saved(done)
        if saved:
            self._save_snapshot()
        if written.error is not None:
            if self.disk_error is None:
                log.error("disk write failed (%s): holding this node's votes until it works again; the rest of "
                          "the network goes on", written.error)
            self.disk_error = written.error
        elif self.disk_error is not None:
            log.warning("disk writes work again: the blocks and the WAL are saved; voting again")
            self.disk_error = None

    async def landed(self) -> bool:
        """Wait for the write in the worker thread, if one runs (and for what its landing calls); whether one did."""
        flight = self._flight
        if flight is None:
            return False
        await asyncio.wait([flight])
        return True

    def close(self) -> None:
        """The worker thread goes (once nothing is written: `landed`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

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
