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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypedDict

from exchange.chain.types.blocks import Block, Commit
from exchange.chain.types.codec import pack, unpack
from exchange.chain.types.genesis import Genesis
from exchange.chain.store.outbox import Outbox
from exchange.chain.store.reopening import ReopeningLog
from exchange.chain.consensus.tendermint import wal_record_height
from exchange.app.txs import SignedTx
from exchange.wire import Wire
from storage import AtomicDocument, FileSystem, OsFileSystem, RecordLog, SnapshotStore, StorageError
from storage.errors import DAMAGED

log = logging.getLogger("exchange.chain.store.block_store")

KEEP_BLOCKS_BEHIND_SNAPSHOT = 1_000     # blocks kept behind the newest snapshot, for peers catching up
SMALL_SEGMENT_BYTES = 4 * 1024 * 1024   # the WAL and the outbox hold little: small files compact sooner
WAL_KEEP_BYTES = 4 * 1024 * 1024          # decided heights' WAL records are dropped once they fill this
SIGN_FROM_UNKNOWN = 1 << 62             # a damaged signing record: sign nothing until caught up with peers


@dataclass(frozen=True)
class WalGap:
    """WAL records `start`..`stop - 1` read back damaged or not at all (`stop` None: the newest records are
    damaged, so any number of them after `start` may be lost), with the heights of the nearest intact records
    that have one: `below` before the gap, `above` after it (None: there is no such record)."""

    start: int
    stop: int | None
    below: int | None
    above: int | None

    @property
    def records(self) -> str:
        return (f"records from {self.start} on (the newest)" if self.stop is None else
                f"record {self.start}" if self.stop == self.start + 1 else f"records {self.start}..{self.stop - 1}")

    def __str__(self) -> str:
        around = (f"after a record of height {self.below}" if self.below is not None else "with no intact record before")
        return f"{self.records} {around}, " + ("with no intact record after" if self.above is None else
                                               f"before a record of height {self.above}")


@dataclass(frozen=True)
class WalVerdict:
    """What WAL damage costs: `sign_from` 1 when no lost record can be of a height we may still sign at,
    else the lowest height we may sign at; `text` says why, naming the records lost and the heights skipped."""

    sign_from: int
    text: str


@dataclass(frozen=True)
class WalDamage:
    """The records a damaged WAL lost, placed between the intact ones around them (`ChainStore.wal_damage`).

    Why the intact neighbours bound what was lost: the WAL only ever gets records of the height the consensus
    is at, and that height only grows (it moves on when a block is stored, or jumps forward to a snapshot; a
    restart resumes at or above the height of the last record: `_recovery_check` never lets a node sign below
    a WAL record's height, nor below a stored block's). Records are appended in the order they were made and
    the log never reorders them, so their heights never decrease along the indexes, and a lost record's height
    lies between `below` and `above` of its gap. `ordered` checks this on every intact record: if it ever
    failed, no gap is bounded and the damage counts as the worst case (as every damage did before)."""

    gaps: tuple[WalGap, ...]
    ordered: bool

    def verdict(self, decided: int) -> WalVerdict:
        """`decided`: every height up to it is decided (our stored blocks reach it, or a WAL record of the next
        height exists: we had decided the one before) and we never sign at it again. A lost record of a height
        <= `decided` is harmless: what it says is superseded by the decision. Only a lost record that may be of
        a height above `decided` may hide a vote we could contradict, and that height can only be
        `decided + 1`: a validator signs at a height only once the block before it is stored (so a record's
        height is at most our stored blocks' height + 1), and a later intact record of height h makes h - 1
        decided. So the floor, when one applies, is `decided + 2`: height `decided + 1` is skipped.

        A gap is harmless when it has an intact record after it whose height is <= `decided` (everything
        lost lies below that record, whatever its position in the log). A gap with no intact record after it
        (the newest records, or a damaged tail) or one before a record of the undecided height may hide a vote
        of that height, and so may any gap when the intact records' heights are out of order."""
        if not self.gaps:
            return WalVerdict(1, "")
        where = "; ".join(str(gap) for gap in self.gaps[:4]) + ("; ..." if len(self.gaps) > 4 else "")
        risky = [gap for gap in self.gaps if not self.ordered or gap.above is None or gap.above > decided]
        if not risky:
            return WalVerdict(1, f"the consensus WAL lost {where}: every lost record comes before an intact record of "
                                 f"a height up to {decided}, all decided, so none can hide a vote we could contradict; "
                                 f"signing as before")
        why = ("the intact records' heights are out of order, so a lost one may be of any height" if not self.ordered
               else f"{risky[0].records} may hide a vote of height {decided + 1}, not decided yet")
        return WalVerdict(decided + 2, f"the consensus WAL lost {where}: {why}; the signing floor covers height "
                                       f"{decided + 1} only (signing again from height {decided + 2})")


class StoreStats(TypedDict):
    """The chain's files as /status shows them (`storage`): each log's counts, damage and pending records."""

    blocks: dict[str, object]
    outbox: dict[str, object]
    snapshots: dict[str, int]
    wal: dict[str, object]
    epochs: dict[str, object]
    reopened: int


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
        self._snapshot_height: int | None = None      # the newest snapshot's (None: not looked yet)
        self._outbox = Outbox(self._outbox_log)
        self.outbox_commit = self._outbox.commit
        unreadable = self._wal_read()[1]
        self.wal_trustworthy = not (self.wal_log.tail_damaged or self.wal_log.missing or unreadable)
        if not self.wal_trustworthy:
            # the service judges the damage (`wal_damage().verdict`): harmless, it accepts the intact records;
            # else it records from which height we sign again before the WAL is discarded
            log.error("consensus WAL in %s is damaged: %s%s", root / "wal", self.wal_log.report.summary(),
                      f"; {len(unreadable)} record(s) with a good checksum do not decode" if unreadable else "")

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
    def wal_records(self) -> list[Wire]:
        """What we signed at heights no stored block decided yet (records of decided heights stay in the
        log until `wal_height_done` drops them in bulk; they say nothing a stored block does not). Of a
        damaged WAL, the intact records (`wal_damage` says what the lost ones may have been)."""
        records = []
        decided = self.last_height
        for _, record in self._wal_read()[0]:
            height = wal_record_height(record)
            if height is None or height > decided:
                records.append(record)
        return records

    def _wal_read(self) -> tuple[list[tuple[int, Wire]], list[int]]:
        """(index, record) of every readable WAL record, and the indices of records whose checksum holds but
        whose body is no record (not msgpack, or not a list): only a bug writes one, and what it said is as
        lost as a record whose bytes flipped, so it counts as a gap (`wal_damage`), never as a record."""
        records: list[tuple[int, Wire]] = []
        unreadable: list[int] = []
        for index, body in self.wal_log.intact():
            try:
                record = unpack(body)
            except ValueError:
                record = None
            if type(record) is list and record:
                records.append((index, record))
            else:
                unreadable.append(index)
        return records, unreadable

    def wal_damage(self) -> WalDamage:
        """The WAL's lost records, each gap with the heights of the nearest intact records around it (no
        gaps: the WAL is intact). See `WalDamage` for what they prove."""
        log_ = self.wal_log
        readable, unreadable = self._wal_read()
        lost: list[tuple[int, int | None]] = [(r.start, r.stop) for r in log_.missing]
        lost += [(index, index + 1) for index in unreadable]
        lost.sort(key=lambda span: span[0])
        if log_.tail_damaged:
            lost.append((log_.last_index + 1, None))
        if not lost:
            return WalDamage((), True)
        heights = [(index, height) for index, height in
                   ((index, wal_record_height(record)) for index, record in readable) if height is not None]
        ordered = all(a[1] <= b[1] for a, b in zip(heights, heights[1:]))
        gaps = []
        for start, stop in lost:
            below = [height for index, height in heights if index < start]
            above = [] if stop is None else [height for index, height in heights if index >= stop]
            gaps.append(WalGap(start, stop, below[-1] if below else None, above[0] if above else None))
        return WalDamage(tuple(gaps), ordered)

    def accept_wal_damage(self) -> None:
        """The service found the WAL's damage harmless (`WalDamage.verdict`): its intact records count as what we
        signed. The damage stays on disk until the next decided height drops the WAL (`wal_height_done`)."""
        self.wal_trustworthy = True

    def wal_append(self, record: Wire) -> None:
        self.wal_append_many([record])

    def wal_append_many(self, records: list[Wire]) -> None:
        """Durable on return, all or none (one fsync)."""
        bodies = [pack(record) for record in records]
        self._wal.write(lambda log_: log_.append(bodies))

    def wal_height_done(self) -> None:
        """A height was decided: its records are no longer needed, but dropping them costs a new file, a
        manifest and three fsyncs, at every height. They are dropped once the WAL holds WAL_KEEP_BYTES (or
        holds damage that was judged harmless at the start: every record in it is of a decided height now);
        until then a restart finds older heights' records too and takes only those of its height."""
        log_ = self.wal_log
        if log_.tail_damaged or log_.missing or log_.size_bytes() >= WAL_KEEP_BYTES:
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
        self.write_snapshot(height, data)
        self.snapshot_written(height)

    def write_snapshot(self, height: int, data: bytes) -> None:
        """The snapshot's own file, durable on return; touches nothing else, so a worker thread may write it while
        the event loop appends blocks (the caller synced the blocks it was made from first)."""
        self.snapshots.save(height, data)

    def snapshot_written(self, height: int) -> None:
        """After `write_snapshot`, in the event loop: the newest snapshot is looked up again, and the blocks it
        covers compacted."""
        self._snapshot_height = None
        self.compact(height)

    def load_snapshot(self) -> tuple[int, bytes] | None:
        snapshot = self.snapshots.load_newest()
        return None if snapshot is None else (snapshot.height, snapshot.data)

    def newest_snapshot_height(self) -> int:
        """The height of the newest snapshot file (0: none), known without reading the disk once it was read."""
        if self._snapshot_height is None:
            heights = self.snapshots.heights()
            self._snapshot_height = heights[0] if heights else 0
        return self._snapshot_height

    def read_snapshot(self, height: int, offset: int, size: int) -> bytes:
        return self.snapshots.read_body(height, offset, size)

    def snapshot_heights(self) -> list[int]:
        """Heights of the stored snapshots, newest first."""
        return self.snapshots.heights()

    def checked_snapshot_at(self, height: int) -> int | None:
        """The body length of the snapshot of `height` once its checksum holds, or None (missing or damaged)."""
        try:
            return self.snapshots.check(height)
        except StorageError:
            return None

    def stats(self) -> StoreStats:
        def of(log_: RecordLog) -> dict[str, object]:
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
