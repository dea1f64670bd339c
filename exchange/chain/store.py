"""ChainStore: a node's chain on disk, in DATA_DIR/chain/.

    genesis/      the genesis document (AtomicDocument)
    blocks/       certified blocks by height: [block, commit] (RecordLog, index = height)
    wal/          consensus write-ahead records of the height being decided (RecordLog)
    outbox/       our users' transactions not yet in a block: add / done records (RecordLog)
    snapshots/    state snapshots at certified heights (SnapshotStore)
    epochs/       the certified block of every validator-set change, kept forever (RecordLog, index = epoch)

Writes that consensus depends on are synchronous and durable on return (a block before the next
height starts, a WAL record before the vote it covers leaves); outbox adds from concurrent API
requests share one fsync through group commit. Damage found on open is reported, never papered
over: `missing_heights` lists blocks the node must get back from peers (certified copies) before it
serves orders again. Memory is bounded by the live segments' small indexes, never by history.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Iterator

from exchange.chain.blocks import Block, Commit
from exchange.chain.codec import pack, unpack
from exchange.chain.genesis import Genesis
from exchange.chain.txs import InvalidTx, SignedTx
from storage import AtomicDocument, GroupCommit, RecordLog, SnapshotStore, StorageError

log = logging.getLogger("exchange.chain.store")

KEEP_BLOCKS_BEHIND_SNAPSHOT = 1_000     # blocks kept behind the newest snapshot, for peers catching up


class ChainStore:
    def __init__(self, data_dir: Path, *, fs: Any = None, segment_bytes: int = 16 * 1024 * 1024,
                 keep_blocks: int = KEEP_BLOCKS_BEHIND_SNAPSHOT) -> None:
        self.keep_blocks = keep_blocks
        root = Path(data_dir) / "chain"
        for part in ("genesis", "blocks", "wal", "outbox", "snapshots", "epochs"):
            (root / part).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root = root
        self._genesis = AtomicDocument(root / "genesis", "genesis", fs=fs)
        self.blocks_log = RecordLog.open(root / "blocks", fs=fs, segment_bytes=segment_bytes)
        self.wal_log = RecordLog.open(root / "wal", fs=fs, segment_bytes=4 * 1024 * 1024)
        self.outbox_log = RecordLog.open(root / "outbox", fs=fs, segment_bytes=4 * 1024 * 1024)
        self.snapshots = SnapshotStore(root / "snapshots", keep=2, fs=fs)
        self.epochs_log = RecordLog.open(root / "epochs", fs=fs, segment_bytes=4 * 1024 * 1024)
        self.outbox_commit: GroupCommit[bytes, int] = GroupCommit(self.outbox_log.write_batch, name="outbox")
        self._pending: dict[str, tuple[int, SignedTx]] = {}      # tx id -> (index of its add record, tx)
        self._done: list[str] = []
        self._done_task: asyncio.Task | None = None
        self._compacted_at = 0.0
        self._load_outbox()
        if self.wal_log.tail_damaged or self.wal_log.missing:
            # a damaged WAL cannot say what we signed: never guess; start the height with no record of it,
            # but the consensus layer refuses to sign at that height (see `wal_trustworthy`)
            log.error("consensus WAL in %s is damaged: %s", root / "wal", self.wal_log.report.summary())
        self.wal_trustworthy = not (self.wal_log.tail_damaged or self.wal_log.missing)

    # ------------------------------------------------------------------ genesis
    def load_genesis(self) -> Genesis | None:
        document = self._genesis.load()
        if document is None:
            return None
        return Genesis.from_wire(unpack(document.value))

    def save_genesis(self, genesis: Genesis) -> None:
        self._genesis.store(pack(genesis.wire()))

    # ------------------------------------------------------------------ blocks
    @property
    def missing_heights(self) -> list[range]:
        """Heights whose stored block is lost or damaged (to fetch from peers before serving orders)."""
        ranges = list(self.blocks_log.missing)
        if self.blocks_log.tail_damaged:
            ranges.append(range(self.blocks_log.last_index + 1, self.blocks_log.last_index + 2))
        return ranges

    def get(self, height: int) -> tuple[Block, Commit] | None:
        log_ = self.blocks_log
        if not log_.first_index <= height <= log_.last_index:
            return None
        try:
            body = log_.get(height)
        except StorageError:
            return None
        return _decode_block(body)

    def blocks(self, start: int | None = None) -> Iterator[tuple[Block, Commit]]:
        """Stored blocks from `start` (default: the first kept) up to the first gap."""
        log_ = self.blocks_log
        expected = log_.first_index if start is None else start
        for index, body in log_.iterate(expected, log_.last_index + 1):
            if index != expected:
                return
            yield _decode_block(body)
            expected += 1

    @property
    def last_height(self) -> int:
        return self.blocks_log.last_index

    @property
    def first_height(self) -> int:
        """The lowest height still stored (blocks below were compacted behind a snapshot)."""
        return self.blocks_log.first_index

    def append_block(self, block: Block, commit: Commit) -> None:
        """Durable on return. A height we already hold (re-fetched after damage) goes back in place."""
        height = block.height
        body = pack([block.wire(), commit.wire()])
        log_ = self.blocks_log
        if log_.tail_damaged:
            log_.truncate_after(log_.last_index)
        if height == log_.next_index:
            log_.append([body], index=height)
        elif height < log_.first_index:
            return
        elif any(height in r for r in log_.missing):
            log_.repair({height: body})
        elif height > log_.next_index:
            # a restored snapshot or a jump: older blocks are not ours to serve
            log_.truncate_before(height)
            log_.append([body], index=height)

    def compact(self, snapshot_height: int) -> None:
        """Keep blocks only from a little behind the newest snapshot (peers catching up still find them)."""
        keep_from = snapshot_height - self.keep_blocks
        if keep_from > self.blocks_log.first_index:
            self.blocks_log.truncate_before(keep_from)

    # ------------------------------------------------------------------ consensus WAL
    def wal_records(self) -> list:
        records = []
        log_ = self.wal_log
        for _, body in log_.iterate(log_.first_index, log_.last_index + 1):
            try:
                records.append(unpack(body))
            except ValueError:
                continue
        return records

    def wal_append(self, record: list) -> None:
        self.wal_log.append([pack(record)])

    def wal_reset(self) -> None:
        """A new height: earlier records are no longer needed (whole old segments are deleted)."""
        log_ = self.wal_log
        if log_.last_index >= log_.first_index:
            log_.truncate_before(log_.next_index)

    # ------------------------------------------------------------------ outbox
    def _load_outbox(self) -> None:
        log_ = self.outbox_log
        for index, body in log_.iterate(log_.first_index, log_.last_index + 1):
            try:
                kind, data = unpack(body)
                if kind == "add":
                    tx = SignedTx.from_wire(data)
                    self._pending[tx.id] = (index, tx)
                elif kind == "done":
                    for tx_id in data:
                        self._pending.pop(tx_id, None)
            except (ValueError, TypeError, InvalidTx):
                log.warning("outbox record %d is unreadable; skipped", index)

    def outbox(self) -> list[SignedTx]:
        return [tx for _, tx in self._pending.values()]

    async def outbox_add(self, txs: list[SignedTx]) -> None:
        """Durable on return; concurrent callers share one fsync. Raises StorageError."""
        indexes = await self.outbox_commit.submit([pack(["add", tx.wire()]) for tx in txs])
        for index, tx in zip(indexes, txs):
            self._pending[tx.id] = (index, tx)

    def outbox_done(self, tx_ids: list[str]) -> None:
        """Forget finished entries. Their 'done' records are written in the background, in batches: a lost one
        only means a committed transaction is handed on once more after a restart (harmless)."""
        known = [tx_id for tx_id in tx_ids if self._pending.pop(tx_id, None) is not None]
        if not known:
            return
        self._done.extend(known)
        if self._done_task is None:
            try:
                self._done_task = asyncio.get_running_loop().create_task(self._write_done())
            except RuntimeError:          # no loop (tools, tests): write now
                self._flush_done()

    async def _write_done(self) -> None:
        try:
            while self._done:
                batch, self._done = self._done, []
                try:
                    await self.outbox_commit.submit([pack(["done", batch])])
                except StorageError as exc:
                    log.warning("could not record finished outbox entries: %s", exc)
            self._compact_outbox()
        finally:
            self._done_task = None

    def _flush_done(self) -> None:
        batch, self._done = self._done, []
        try:
            self.outbox_log.append([pack(["done", batch])])
        except StorageError as exc:
            log.warning("could not record finished outbox entries: %s", exc)
        self._compact_outbox()

    def _compact_outbox(self) -> None:
        """Drop whole old segments once every entry in them is finished (at most once a few seconds)."""
        now = time.monotonic()
        if now - self._compacted_at < 5.0:
            return
        self._compacted_at = now
        oldest = min((index for index, _ in self._pending.values()), default=self.outbox_log.next_index)
        if oldest > self.outbox_log.first_index:
            try:
                self.outbox_log.truncate_before(oldest)
            except StorageError as exc:
                log.warning("could not compact the outbox: %s", exc)

    # ------------------------------------------------------------------ epoch proofs
    def append_epoch(self, block: Block, commit: Commit) -> None:
        self.epochs_log.append([pack([block.wire(), commit.wire()])])

    def epoch_proofs(self) -> list[tuple[Block, Commit]]:
        log_ = self.epochs_log
        return [_decode_block(body) for _, body in log_.iterate(log_.first_index, log_.last_index + 1)]

    def replace_epochs(self, proofs: list[tuple[Block, Commit]]) -> None:
        """A node that started from a snapshot keeps the proofs it was given (it serves them in turn)."""
        log_ = self.epochs_log
        if log_.last_index >= log_.first_index:
            log_.truncate_after(log_.first_index - 1)
        if proofs:
            log_.append([pack([b.wire(), c.wire()]) for b, c in proofs])

    # ------------------------------------------------------------------ snapshots and status
    def save_snapshot(self, height: int, data: bytes) -> None:
        self.snapshots.save(height, data)
        self.compact(height)

    def load_snapshot(self) -> tuple[int, bytes] | None:
        snapshot = self.snapshots.load_newest()
        return None if snapshot is None else (snapshot.height, snapshot.data)

    def stats(self) -> dict[str, Any]:
        return {"blocks": self.blocks_log.stats(), "outbox": {"pending": len(self._pending),
                                                             **self.outbox_log.stats()},
                "snapshots": self.snapshots.stats(), "wal": self.wal_log.stats()}

    def close(self) -> None:
        for log_ in (self.blocks_log, self.wal_log, self.outbox_log, self.epochs_log):
            try:
                log_.close()
            except StorageError:
                pass


def _decode_block(body: bytes) -> tuple[Block, Commit]:
    block_wire, commit_wire = unpack(body)
    return Block.from_wire(block_wire), Commit.from_wire(commit_wire)
