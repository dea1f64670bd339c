"""Outbox: our users' transactions not yet in a block, durable before the API answers 202.

Records are ["add", tx] and ["done", [tx ids]] in a RecordLog. Concurrent adds share one fsync through
group commit. Every add is written twice, as neighbouring records, so one damaged record never loses an
order the API answered 202. Opening reads around damage; when some is found, the pending transactions are
written afresh and everything before them dropped, and the unreadable records that are not the twin of an
intact add are counted in `lost` (each may have held an order's only copies: said in the log, shown in
/status). A write whose outcome is unknown is voided with a "done" record, so an order the API refused
never comes back after a restart.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Iterator

from exchange.chain.types.codec import pack, unpack
from exchange.chain.store.reopening import ReopeningLog
from exchange.app.txs import InvalidTx, SignedTx
from storage import GroupCommit, RecordLog, StorageError

log = logging.getLogger("exchange.chain.store.block_store")

COPIES = 2                  # each add record is written this many times (one may be damaged)
COMPACT_INTERVAL = 5.0      # seconds between attempts to drop finished segments


class Outbox:
    def __init__(self, store: ReopeningLog) -> None:
        self._store = store
        self.commit: GroupCommit[bytes, int] = GroupCommit(self._write, name="outbox")
        self._pending: dict[str, tuple[int, SignedTx]] = {}      # tx id -> (index of its first add record, tx)
        self.lost = 0
        self.error: StorageError | None = None     # the last write failed (cleared by a success)
        self._done: list[str] = []
        self._done_task: asyncio.Task[None] | None = None
        self._compacted_at = float("-inf")
        self._load()

    @property
    def log(self) -> RecordLog:
        return self._store.log

    def _write(self, bodies: list[bytes]) -> list[int]:
        """The GroupCommit writer (in a worker thread): one durable batch."""
        return self._store.write(lambda log_: log_.write_batch(bodies))

    # ------------------------------------------------------------------ open
    def _load(self) -> None:
        log_ = self.log
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
        self.lost = _unexplained(unreadable, adds) + log_.tail_damaged
        log.error("outbox %s is damaged (%s); %d pending transactions read back intact and are handed on again; "
                  "%d unreadable records are not the second copy of an intact one%s: an order answered 202 held "
                  "only there is lost unless a validator already had it (GET /orders/{id} tells)",
                  log_.directory, log_.report.summary(), len(self._pending), self.lost - log_.tail_damaged,
                  ", and the newest records are damaged" if log_.tail_damaged else "")
        self._rewrite()

    def _rewrite(self) -> None:
        """Write the pending transactions afresh, then drop everything before them (damage included), so the
        outbox takes appends again. A crash at any point leaves every intact pending add at least once."""
        log_ = self.log
        if log_.tail_damaged:
            log_.truncate_after(log_.last_index)
        pending = [tx for _, tx in sorted(self._pending.values(), key=lambda item: item[0])]
        first = log_.append([body for tx in pending for body in _add_records(tx)]) if pending else log_.next_index
        self._pending = {tx.id: (first + COPIES * n, tx) for n, tx in enumerate(pending)}
        log_.truncate_before(first)

    # ------------------------------------------------------------------ use
    def pending(self) -> list[SignedTx]:
        return [tx for _, tx in self._pending.values()]

    async def add(self, txs: list[SignedTx]) -> None:
        """Durable on return; concurrent callers share one fsync. Raises StorageError."""
        try:
            indexes = await self.commit.submit([body for tx in txs for body in _add_records(tx)])
        except StorageError as exc:
            self.error = exc
            if not exc.outcome_unknown:
                raise
            raise self._void(txs, exc) from exc
        self.error = None
        for n, tx in enumerate(txs):
            self._pending[tx.id] = (indexes[COPIES * n], tx)

    async def probe(self) -> bool:
        """After a failed write: does the outbox take writes again? (An empty 'done' record.)"""
        try:
            await self.commit.submit([pack(["done", []])])
        except StorageError as exc:
            self.error = exc
            return False
        self.error = None
        return True

    def _void(self, txs: list[SignedTx], cause: StorageError) -> StorageError:
        """The StorageError to report after a failed add whose records might be on disk anyway."""
        try:
            self._write([pack(["done", [tx.id for tx in txs]])])
        except StorageError as exc:
            log.error("could not void outbox transactions %s after a failed write (%s): they may come back "
                      "after a restart", [tx.id for tx in txs], exc)
            return cause
        return StorageError(cause.kind, f"{cause} (voided: nothing was accepted)", errno=cause.errno, path=cause.path)

    def done(self, tx_ids: list[str]) -> None:
        """Forget finished entries; call it only once the block holding them is durable (or they expired).
        Their 'done' records go in the background, in batches that share the adds' fsync: a lost one only
        means a committed transaction is handed on once more after a restart (harmless)."""
        known = [tx_id for tx_id in tx_ids if self._pending.pop(tx_id, None) is not None]
        if not known:
            return
        self._done.extend(known)
        if self._done_task is not None:
            return
        try:
            self._done_task = asyncio.get_running_loop().create_task(self._write_done(), name="outbox.done")
        except RuntimeError:          # no running loop (tools, tests): write now
            batch, self._done = self._done, []
            try:
                self._store.write(lambda log_: log_.append([pack(["done", batch])]))
            except StorageError as exc:
                log.warning("could not record finished outbox entries: %s", exc)
            self._compact()

    async def flush(self) -> None:
        """Wait for the 'done' records in flight (before the store closes)."""
        while self._done_task is not None:
            await asyncio.shield(self._done_task)

    async def _write_done(self) -> None:
        try:
            while self._done:
                batch, self._done = self._done, []
                try:
                    await self.commit.submit([pack(["done", batch])])
                except StorageError as exc:
                    log.warning("could not record finished outbox entries: %s", exc)
            self._compact()
        finally:
            self._done_task = None

    def _compact(self) -> None:
        """Drop whole old segments once every entry in them is finished (at most once every few seconds)."""
        now = time.monotonic()
        if now - self._compacted_at < COMPACT_INTERVAL:
            return
        self._compacted_at = now
        log_ = self.log
        oldest = min((index for index, _ in self._pending.values()), default=log_.next_index)
        if oldest > log_.first_index:
            try:
                self._store.write(lambda log_: log_.truncate_before(oldest))
            except StorageError as exc:
                log.warning("could not compact the outbox: %s", exc)

    def __len__(self) -> int:
        return len(self._pending)


def _add_records(tx: SignedTx) -> list[bytes]:
    return [pack(["add", tx.wire()])] * COPIES


def _unexplained(unreadable: list[int], adds: dict[int, str]) -> int:
    """How many unreadable records are not the lost twin of an intact add (each add is written as two
    neighbouring copies): records that may have held some order's only surviving copy, or a 'done'."""
    copies = Counter(adds.values())
    count = 0
    for index in unreadable:
        twins = [adds.get(index - 1), adds.get(index + 1)]
        count += not any(t is not None and copies[t] < COPIES for t in twins)
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
