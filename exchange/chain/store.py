"""ChainStore: a node's chain on disk, in DATA_DIR/chain/.

    genesis/      the genesis document (AtomicDocument)
    blocks/       certified blocks by height: [block, commit] (RecordLog, index = height)
    wal/          consensus write-ahead records of the height being decided (RecordLog)
    outbox/       our users' transactions not yet in a block: add / done records (RecordLog)
    snapshots/    state snapshots at certified heights (SnapshotStore)
    signing/      the lowest height this validator may sign at (AtomicDocument), once damage made it unsure
    epochs/       the certified block of every validator-set change, kept forever (RecordLog, index = epoch)

Writes that consensus depends on are synchronous and durable on return (a block before the next
height starts, a WAL record before the vote it covers leaves); outbox adds from concurrent API
requests share one fsync through group commit. Damage found on open is reported, never papered
over: `missing_heights` lists blocks the node must get back from peers (certified copies) before it
serves orders again. The outbox (outbox.py) stores every add twice and says what damage cost; each
log reopens itself after a write it could not undo (reopening.py). Memory is bounded by the live
segments' small indexes, never by history.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator

from exchange.chain.blocks import Block, Commit
from exchange.chain.codec import pack, unpack
from exchange.chain.genesis import Genesis
from exchange.chain.outbox import Outbox
from exchange.chain.reopening import ReopeningLog
from exchange.chain.tendermint import wal_record_height
from exchange.chain.txs import SignedTx
from storage import AtomicDocument, FileSystem, OsFileSystem, RecordLog, SnapshotStore, StorageError
from storage.errors import DAMAGED

log = logging.getLogger("exchange.chain.store")

KEEP_BLOCKS_BEHIND_SNAPSHOT = 1_000     # blocks kept behind the newest snapshot, for peers catching up
SMALL_SEGMENT_BYTES = 4 * 1024 * 1024   # the WAL and the outbox hold little: small files compact sooner
WAL_KEEP_BYTES = 4 * 1024 * 1024          # decided heights' WAL records are dropped once they fill this
SIGN_FROM_UNKNOWN = 1 << 62             # a damaged signing record: sign nothing until caught up with peers


class ChainStore:
    def __init__(self, data_dir: Path | str, *, fs: FileSystem | None = None,
                 segment_bytes: int = 16 * 1024 * 1024, small_segment_bytes: int = SMALL_SEGMENT_BYTES,
                 keep_blocks: int = KEEP_BLOCKS_BEHIND_SNAPSHOT) -> None:
        fs = fs or OsFileSystem()
        self.keep_blocks = keep_blocks
        root = Path(data_dir) / "chain"
        for part in ("genesis", "blocks", "wal", "outbox", "snapshots", "signing", "epochs"):
            fs.makedirs(str(root / part))
        self.root = root
        self._genesis = AtomicDocument(root / "genesis", "genesis", fs=fs)
        self._sign_from = AtomicDocument(root / "signing", "sign_from", fs=fs)

        def opener(name: str, size: int) -> Callable[[], RecordLog]:
            return lambda: RecordLog.open(root / name, fs=fs, segment_bytes=size)
        self._blocks = ReopeningLog("blocks", opener("blocks", segment_bytes))
        self._wal = ReopeningLog("wal", opener("wal", small_segment_bytes))
        self._outbox_log = ReopeningLog("outbox", opener("outbox", small_segment_bytes))
        self._epochs = ReopeningLog("epochs", opener("epochs", small_segment_bytes))
        self._logs = (self._blocks, self._wal, self._outbox_log, self._epochs)
        self.snapshots = SnapshotStore(root / "snapshots", keep=2, fs=fs)
        self._outbox = Outbox(self._outbox_log)
        self.outbox_commit = self._outbox.commit
        self.wal_trustworthy = not (self.wal_log.tail_damaged or self.wal_log.missing)
        if not self.wal_trustworthy:
            # a damaged WAL cannot say what we signed at the height in progress: the service decides from
            # which height we sign again (and records it) before the WAL is discarded
            log.error("consensus WAL in %s is damaged: %s", root / "wal", self.wal_log.report.summary())

    @property
    def blocks_log(self) -> RecordLog:
        return self._blocks.log

    @property
    def wal_log(self) -> RecordLog:
        return self._wal.log

    @property
    def outbox_log(self) -> RecordLog:
        return self._outbox_log.log

    @property
    def reopened(self) -> int:
        """Logs reopened after a write that could not be undone."""
        return sum(log_.reopened for log_ in self._logs)

    # ------------------------------------------------------------------ genesis
    def load_genesis(self) -> Genesis | None:
        document = self._genesis.load()
        if document is None:
            return None
        return Genesis.from_wire(unpack(document.value))

    def save_genesis(self, genesis: Genesis) -> None:
        self._genesis.store(pack(genesis.wire()))

    # ------------------------------------------------------------------ signing floor
    def load_sign_from(self) -> int:
        """The lowest height we may sign at, as recorded by an earlier start (1 when nothing was recorded; a
        damaged record counts as "unknown", which means: sign nothing until caught up with peers)."""
        try:
            document = self._sign_from.load()
        except StorageError as exc:
            if exc.kind != DAMAGED:
                raise
            log.error("%s; signing only once caught up with peers", exc)
            return SIGN_FROM_UNKNOWN
        if document is None:
            return 1
        try:
            return int(unpack(document.value))
        except (TypeError, ValueError):
            log.error("the signing record %s is unreadable; signing only once caught up with peers", document.path)
            return SIGN_FROM_UNKNOWN

    def save_sign_from(self, height: int) -> None:
        """Durable on return: never sign below `height`, even after a crash that loses the WAL's evidence."""
        self._sign_from.store(pack(height))

    # ------------------------------------------------------------------ blocks
    @property
    def missing_heights(self) -> list[range]:
        """Heights whose stored block is lost or damaged (to fetch from peers before serving orders)."""
        ranges = list(self.blocks_log.missing)
        if self.blocks_log.tail_damaged:
            ranges.append(range(self.blocks_log.last_index + 1, self.blocks_log.last_index + 2))
        return ranges

    @property
    def blocks_tail_damaged(self) -> bool:
        return self.blocks_log.tail_damaged

    @property
    def blocks_damage(self) -> list[str]:
        """Where the block log is damaged: file, byte range and reason, for messages."""
        return [str(damage) for damage in self.blocks_log.damage[:4]]

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
        """Stored blocks from `start` (default: the first kept) up to the first missing one."""
        log_ = self.blocks_log
        first = log_.first_index if start is None else max(start, log_.first_index)
        stop = min([r.start for r in log_.missing if r.stop > first] + [log_.last_index + 1])
        for _, body in log_.iterate(first, stop):
            yield _decode_block(body)

    @property
    def first_height(self) -> int:
        return self.blocks_log.first_index

    @property
    def last_height(self) -> int:
        return self.blocks_log.last_index

    def append_block(self, block: Block, commit: Commit, durable: bool = True) -> None:
        """Durable on return unless `durable` is False (then at the next `sync_blocks`: for a certified block
        a follower can fetch again). A height we already hold (re-fetched after damage) goes back in place."""
        body = _encode_block(block, commit)
        self._blocks.write(lambda log_: _put(log_, block.height, body, durable))

    def fsyncs(self) -> dict[str, int]:
        """fdatasyncs of appended records, by log (an operator's view of what the disk is asked for)."""
        return {reopening.name: reopening.syncs for reopening in self._logs}

    def sync_blocks(self) -> None:
        """Blocks appended with durable=False are on disk on return."""
        self._blocks.write(lambda log_: log_.sync())

    def compact(self, snapshot_height: int) -> None:
        """Keep blocks only from a little behind the newest snapshot (peers catching up still find them)."""
        keep_from = snapshot_height - self.keep_blocks
        if keep_from > self.blocks_log.first_index:
            self._blocks.write(lambda log_: log_.truncate_before(keep_from))

    # ------------------------------------------------------------------ consensus WAL
    def wal_records(self) -> list:
        """What we signed at heights no stored block decided yet (records of decided heights stay in the
        log until `wal_height_done` drops them in bulk; they say nothing a stored block does not)."""
        records = []
        log_ = self.wal_log
        decided = self.last_height
        for _, body in log_.iterate(log_.first_index, log_.last_index + 1):
            try:
                record = unpack(body)
            except ValueError:
                continue
            height = wal_record_height(record)
            if height is None or height > decided:
                records.append(record)
        return records

    def wal_append(self, record: list) -> None:
        self.wal_append_many([record])

    def wal_append_many(self, records: list) -> None:
        """Durable on return, all or none (one fsync)."""
        bodies = [pack(record) for record in records]
        self._wal.write(lambda log_: log_.append(bodies))

    def wal_height_done(self) -> None:
        """A height was decided: its records are no longer needed, but dropping them costs a new file, a
        manifest and three fsyncs, at every height. They are dropped once the WAL holds WAL_KEEP_BYTES;
        until then a restart finds older heights' records too and takes only those of its height."""
        log_ = self.wal_log
        if log_.tail_damaged or log_.stats()["bytes"] >= WAL_KEEP_BYTES:
            self.wal_reset()

    def wal_reset(self) -> None:
        """A new height: earlier records are no longer needed (whole old segments are deleted). Also how a
        damaged WAL is discarded, once the service has recorded what it implied (`save_sign_from`)."""
        def reset(log_: RecordLog) -> None:
            if log_.tail_damaged:
                log_.truncate_after(log_.last_index)
            if log_.last_index >= log_.first_index:
                log_.truncate_before(log_.next_index)
        self._wal.write(reset)
        self.wal_trustworthy = True

    # ------------------------------------------------------------------ outbox
    def outbox(self) -> list[SignedTx]:
        return self._outbox.pending()

    async def outbox_add(self, txs: list[SignedTx]) -> None:
        """Durable on return; concurrent callers share one fsync. Raises StorageError (see Outbox.add)."""
        await self._outbox.add(txs)

    async def outbox_probe(self) -> bool:
        return await self._outbox.probe()

    async def outbox_flush(self) -> None:
        await self._outbox.flush()

    def outbox_done(self, tx_ids: list[str]) -> None:
        self._outbox.done(tx_ids)

    @property
    def outbox_error(self) -> StorageError | None:
        return self._outbox.error

    @property
    def outbox_lost(self) -> int:
        return self._outbox.lost

    # ------------------------------------------------------------------ epoch proofs
    @property
    def epochs_log(self) -> RecordLog:
        return self._epochs.log

    def append_epoch(self, block: Block, commit: Commit) -> None:
        self.sync_blocks()      # a proof of a validator change never outlives the blocks before it
        body = _encode_block(block, commit)
        self._epochs.write(lambda log_: log_.append([body]))

    def epoch_proofs(self) -> list[tuple[Block, Commit]]:
        log_ = self.epochs_log
        return [_decode_block(body) for _, body in log_.iterate(log_.first_index, log_.last_index + 1)]

    def replace_epochs(self, proofs: list[tuple[Block, Commit]]) -> None:
        """A node that started from a snapshot keeps the proofs it was given (it serves them in turn)."""
        bodies = [_encode_block(b, c) for b, c in proofs]

        def replace(log_: RecordLog) -> None:
            if log_.last_index >= log_.first_index:
                log_.truncate_after(log_.first_index - 1)
            if bodies:
                log_.append(bodies)
        self._epochs.write(replace)

    # ------------------------------------------------------------------ snapshots and status
    def save_snapshot(self, height: int, data: bytes) -> None:
        self.sync_blocks()      # a snapshot never outlives the blocks it was made from
        self.snapshots.save(height, data)
        self.compact(height)

    def load_snapshot(self) -> tuple[int, bytes] | None:
        snapshot = self.snapshots.load_newest()
        return None if snapshot is None else (snapshot.height, snapshot.data)

    def stats(self) -> dict[str, Any]:
        def of(log_: RecordLog) -> dict[str, Any]:
            return {**log_.stats(), "damaged": [str(d) for d in log_.damage[:8]], "tail_damaged": log_.tail_damaged}
        return {"blocks": of(self.blocks_log),
                "outbox": {"pending": len(self._outbox), "lost": self._outbox.lost, **of(self.outbox_log)},
                "snapshots": self.snapshots.stats(), "wal": of(self.wal_log), "epochs": of(self.epochs_log),
                "reopened": self.reopened}

    def close(self) -> None:
        for log_ in self._logs:
            log_.close()


def _put(log_: RecordLog, height: int, body: bytes, durable: bool) -> None:
    if log_.tail_damaged:
        log_.truncate_after(log_.last_index)
    if height == log_.next_index:
        log_.append([body], index=height, sync=durable)
    elif height < log_.first_index:
        return
    elif any(height in r for r in log_.missing):
        log_.repair({height: body})
    elif height > log_.next_index:
        # a restored snapshot or a jump: older blocks are not ours to serve
        log_.truncate_before(height)
        log_.append([body], index=height)


def _encode_block(block: Block, commit: Commit) -> bytes:
    return pack([block.wire(), commit.wire()])


def _decode_block(body: bytes) -> tuple[Block, Commit]:
    block_wire, commit_wire = unpack(body)
    return Block.from_wire(block_wire), Commit.from_wire(commit_wire)
