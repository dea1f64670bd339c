"""ChainStore: a node's chain on disk, in DATA_DIR/chain/.

    genesis/      the genesis document (AtomicDocument)
    blocks/       certified blocks by height: [block, commit] (RecordLog, index = height)
    wal/          consensus write-ahead records of the height being decided (RecordLog)
    outbox/       our users' transactions not yet in a block: add / done records (RecordLog)
    snapshots/    state snapshots at certified heights (SnapshotStore)
    signing/      the lowest height this validator may sign at (AtomicDocument), once damage made it unsure

Writes that consensus depends on are synchronous and durable on return (a block before the next
height starts, a WAL record before the vote it covers leaves); outbox adds from concurrent API
requests share one fsync through group commit. Damage found on open is reported, never papered
over: `missing_heights` lists blocks the node must get back from peers (certified copies) before it
serves orders again. Every outbox add is written twice, so one damaged record never loses an order
the API answered 202; what is still lost is counted in `outbox_lost` and said in the log. A log
whose failed write could not be undone is reopened before the next write (reopening cuts a torn
tail), so a node recovers from a bad moment of its disk without a restart. Memory is bounded by the
live segments' small indexes, never by history.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from exchange.chain.blocks import Block, Commit
from exchange.chain.codec import pack, unpack
from exchange.chain.genesis import Genesis
from exchange.chain.txs import InvalidTx, SignedTx
from storage import AtomicDocument, FileSystem, GroupCommit, OsFileSystem, RecordLog, SnapshotStore, StorageError
from storage.errors import DAMAGED, FAILED

log = logging.getLogger("exchange.chain.store")

KEEP_BLOCKS_BEHIND_SNAPSHOT = 1_000     # blocks kept behind the newest snapshot, for peers catching up
SMALL_SEGMENT_BYTES = 4 * 1024 * 1024   # the WAL and the outbox hold little: small files compact sooner
OUTBOX_COPIES = 2                       # each add record is written this many times (one may be damaged)
SIGN_FROM_UNKNOWN = 1 << 62             # a damaged signing record: sign nothing until caught up with peers
_T = TypeVar("_T")


class ChainStore:
    def __init__(self, data_dir: Path | str, *, fs: FileSystem | None = None,
                 segment_bytes: int = 16 * 1024 * 1024, small_segment_bytes: int = SMALL_SEGMENT_BYTES) -> None:
        fs = fs or OsFileSystem()
        root = Path(data_dir) / "chain"
        for part in ("genesis", "blocks", "wal", "outbox", "snapshots", "signing"):
            fs.makedirs(str(root / part))
        self.root = root
        self.fs = fs
        self._segment_bytes = {"blocks": segment_bytes, "wal": small_segment_bytes, "outbox": small_segment_bytes}
        self._needs_reopen: set[str] = set()
        self._genesis = AtomicDocument(root / "genesis", "genesis", fs=fs)
        self._sign_from = AtomicDocument(root / "signing", "sign_from", fs=fs)
        self.blocks_log = self._open_log("blocks")
        self.wal_log = self._open_log("wal")
        self.outbox_log = self._open_log("outbox")
        self.snapshots = SnapshotStore(root / "snapshots", keep=2, fs=fs)
        self.outbox_commit: GroupCommit[bytes, int] = GroupCommit(self._write_outbox, name="outbox")
        self._pending: dict[str, tuple[int, SignedTx]] = {}      # tx id -> (index of its first add record, tx)
        self.outbox_lost = 0         # outbox records found unreadable with no intact copy (orders maybe lost)
        self.reopened = 0            # logs reopened after a write that could not be undone
        self.outbox_error: StorageError | None = None     # the last outbox write failed (cleared by a success)
        self._load_outbox()
        self.wal_trustworthy = not (self.wal_log.tail_damaged or self.wal_log.missing)
        if not self.wal_trustworthy:
            # a damaged WAL cannot say what we signed at the height in progress: the service decides from
            # which height we sign again (and records it) before the WAL is discarded
            log.error("consensus WAL in %s is damaged: %s", root / "wal", self.wal_log.report.summary())

    def _open_log(self, name: str) -> RecordLog:
        return RecordLog.open(self.root / name, fs=self.fs, segment_bytes=self._segment_bytes[name])

    def _reopen_after(self, name: str, write: Callable[[], _T]) -> _T:
        """Run a write on log `name`; if it failed in a way the log could not undo, reopen the log (which cuts
        what a torn write left) so the next attempt can succeed, and raise the error."""
        try:
            return write()
        except StorageError as exc:
            if exc.kind == FAILED or exc.outcome_unknown:
                self._reopen(name)
            raise

    def _reopen(self, name: str) -> None:
        attribute = f"{name}_log"
        getattr(self, attribute).close()
        try:
            setattr(self, attribute, self._open_log(name))
        except StorageError as exc:      # the old (closed) log stays: every write fails until a later reopen works
            log.error("cannot reopen the %s log after a failed write: %s", name, exc)
            self._needs_reopen.add(name)
            return
        self._needs_reopen.discard(name)
        self.reopened += 1
        log.warning("reopened the %s log after a write whose outcome was unknown: %s", name,
                    getattr(self, attribute).report.summary())

    def _writable(self, name: str) -> RecordLog:
        """The log, reopened first if it was closed by a failed reopen earlier."""
        if name in self._needs_reopen:
            self._reopen(name)
        return getattr(self, f"{name}_log")

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

    def append_block(self, block: Block, commit: Commit) -> None:
        """Durable on return. A height we already hold (re-fetched after damage) goes back in place."""
        self._reopen_after("blocks", lambda: self._put_block(block, commit))

    def _put_block(self, block: Block, commit: Commit) -> None:
        height = block.height
        body = pack([block.wire(), commit.wire()])
        log_ = self._writable("blocks")
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
        keep_from = snapshot_height - KEEP_BLOCKS_BEHIND_SNAPSHOT
        if keep_from > self.blocks_log.first_index:
            self._reopen_after("blocks", lambda: self._writable("blocks").truncate_before(keep_from))

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
        self._reopen_after("wal", lambda: self._writable("wal").append([pack(record)]))

    def wal_reset(self) -> None:
        """A new height: earlier records are no longer needed (whole old segments are deleted). Also how a
        damaged WAL is discarded, once the service has recorded what it implied (`save_sign_from`)."""
        def reset() -> None:
            log_ = self._writable("wal")
            if log_.tail_damaged:
                log_.truncate_after(log_.last_index)
            if log_.last_index >= log_.first_index:
                log_.truncate_before(log_.next_index)
        self._reopen_after("wal", reset)
        self.wal_trustworthy = True

    # ------------------------------------------------------------------ outbox
    def _write_outbox(self, bodies: list[bytes]) -> list[int]:
        """The GroupCommit writer (in a worker thread): one durable batch."""
        return self._reopen_after("outbox", lambda: self._writable("outbox").write_batch(bodies))

    def _load_outbox(self) -> None:
        log_ = self.outbox_log
        adds: dict[int, str] = {}          # index -> tx id of every intact add record
        unreadable: list[int] = [i for r in log_.missing for i in r]
        for start, stop in _present_ranges(log_.first_index, log_.last_index + 1, log_.missing):
            for index, body in log_.iterate(start, stop):
                try:
                    kind, data = unpack(body)
                    if kind == "add":
                        tx = SignedTx.from_wire(data)
                        adds[index] = tx.id
                        self._pending.setdefault(tx.id, (index, tx))
                    elif kind == "done":
                        for tx_id in data:
                            self._pending.pop(tx_id, None)
                except (ValueError, TypeError, InvalidTx):
                    unreadable.append(index)
        if not (unreadable or log_.tail_damaged):      # damage below first_index was dealt with at an earlier start
            return
        self.outbox_lost = _unexplained(unreadable, adds) + log_.tail_damaged
        log.error("outbox %s is damaged (%s); %d pending transactions read back intact and are handed on again; "
                  "%d unreadable records are not the second copy of an intact one%s: an order answered 202 held "
                  "only there is lost unless a validator already had it (GET /orders/{id} tells)",
                  log_.directory, log_.report.summary(), len(self._pending), self.outbox_lost - log_.tail_damaged,
                  ", and the newest records are damaged" if log_.tail_damaged else "")
        self._rewrite_outbox()

    def _rewrite_outbox(self) -> None:
        """Write the pending transactions afresh, then drop everything before them (damage included), so the
        outbox takes appends again. A crash at any point leaves every intact pending add at least once."""
        log_ = self.outbox_log
        if log_.tail_damaged:
            log_.truncate_after(log_.last_index)
        pending = [tx for _, tx in sorted(self._pending.values(), key=lambda item: item[0])]
        first = log_.append([body for tx in pending for body in _add_records(tx)]) if pending else log_.next_index
        self._pending = {tx.id: (first + OUTBOX_COPIES * n, tx) for n, tx in enumerate(pending)}
        log_.truncate_before(first)

    def outbox(self) -> list[SignedTx]:
        return [tx for _, tx in self._pending.values()]

    async def outbox_add(self, txs: list[SignedTx]) -> None:
        """Durable on return; concurrent callers share one fsync. Raises StorageError; after one whose outcome
        was unknown, the transactions are voided with a "done" record so they never come back after a restart."""
        try:
            indexes = await self.outbox_commit.submit([body for tx in txs for body in _add_records(tx)])
        except StorageError as exc:
            self.outbox_error = exc
            if not exc.outcome_unknown:
                raise
            raise self._void(txs, exc) from exc
        self.outbox_error = None
        for n, tx in enumerate(txs):
            self._pending[tx.id] = (indexes[OUTBOX_COPIES * n], tx)

    async def outbox_probe(self) -> bool:
        """After a failed outbox write: does the outbox take writes again? (An empty 'done' record.)"""
        try:
            await self.outbox_commit.submit([pack(["done", []])])
        except StorageError as exc:
            self.outbox_error = exc
            return False
        self.outbox_error = None
        return True

    def _void(self, txs: list[SignedTx], cause: StorageError) -> StorageError:
        """The StorageError to report after a failed add whose records might be on disk anyway."""
        try:
            self._write_outbox([pack(["done", [tx.id for tx in txs]])])
        except StorageError as exc:
            log.error("could not void outbox transactions %s after a failed write (%s): they may come back "
                      "after a restart", [tx.id for tx in txs], exc)
            return cause
        return StorageError(cause.kind, f"{cause} (voided: nothing was accepted)", errno=cause.errno, path=cause.path)

    def outbox_done(self, tx_ids: list[str]) -> None:
        """Best effort: a lost 'done' only means a committed transaction is handed on once more (harmless).
        Call it only once the block holding them is durable (or they expired)."""
        known = [tx_id for tx_id in tx_ids if self._pending.pop(tx_id, None) is not None]
        if not known:
            return
        try:
            self._reopen_after("outbox", lambda: self._writable("outbox").append([pack(["done", known])]))
        except StorageError as exc:
            log.warning("could not record finished outbox entries: %s", exc)
        log_ = self.outbox_log
        oldest = min((index for index, _ in self._pending.values()), default=log_.next_index)
        if oldest > log_.first_index:
            try:
                log_.truncate_before(oldest)
            except StorageError as exc:
                log.warning("could not compact the outbox: %s", exc)

    # ------------------------------------------------------------------ snapshots and status
    def save_snapshot(self, height: int, data: bytes) -> None:
        self.snapshots.save(height, data)
        self.compact(height)

    def load_snapshot(self) -> tuple[int, bytes] | None:
        snapshot = self.snapshots.load_newest()
        return None if snapshot is None else (snapshot.height, snapshot.data)

    def stats(self) -> dict[str, Any]:
        def of(log_: RecordLog) -> dict[str, Any]:
            return {**log_.stats(), "damaged": [str(d) for d in log_.damage[:8]], "tail_damaged": log_.tail_damaged}
        return {"blocks": of(self.blocks_log),
                "outbox": {"pending": len(self._pending), "lost": self.outbox_lost, **of(self.outbox_log)},
                "snapshots": self.snapshots.stats(), "wal": of(self.wal_log), "reopened": self.reopened}

    def close(self) -> None:
        for log_ in (self.blocks_log, self.wal_log, self.outbox_log):
            try:
                log_.close()
            except StorageError:
                pass


def _add_records(tx: SignedTx) -> list[bytes]:
    body = pack(["add", tx.wire()])
    return [body] * OUTBOX_COPIES


def _unexplained(unreadable: list[int], adds: dict[int, str]) -> int:
    """How many unreadable outbox records are not the lost twin of an intact add (each add is written as two
    neighbouring copies): records that may have held some order's only surviving copy, or a 'done'."""
    copies = Counter(adds.values())
    count = 0
    for index in unreadable:
        twins = [adds.get(index - 1), adds.get(index + 1)]
        count += not any(t is not None and copies[t] < OUTBOX_COPIES for t in twins)
    return count


def _present_ranges(first: int, stop: int, missing: tuple[range, ...]) -> Iterator[tuple[int, int]]:
    """[start, stop) spans of indexes in first..stop-1 that are not missing."""
    position = first
    for gap in sorted(missing, key=lambda r: r.start):
        if gap.start > position:
            yield position, min(gap.start, stop)
        position = max(position, gap.stop)
    if position < stop:
        yield position, stop


def _decode_block(body: bytes) -> tuple[Block, Commit]:
    block_wire, commit_wire = unpack(body)
    return Block.from_wire(block_wire), Commit.from_wire(commit_wire)

