"""ReplayWindow: the ids of committed transactions that could still be valid, so each applies once.

A transaction is valid only while `block_time < expires <= block_time + ttl`, so once block time
reaches its `expires` the time rule alone refuses it and its id can be forgotten. This is the
short-term order scheme of dYdX v4 (an order carries a good-til-block at most a short window
ahead; its id is remembered until then), with block time in place of height.

Ids are kept in buckets by `expires // BUCKET_MS`; a transaction's own `expires` names the
bucket its id would be in, so a lookup is two dict probes, and pruning drops whole
buckets once every `expires` they can hold is at or below the block time. Memory is therefore
bounded by the transactions committed in any `ttl + BUCKET_MS` of block time: at most
(transactions per second) x (ttl + 1 s) ids, about 150 bytes each in CPython (measured: the
32-character id string plus its slot) — 5,000 single-op tx/s with the default 120 s TTL is
605,000 ids, about 90 MB. Batching ops into one transaction (up to 250) divides that by the
batch size; a shorter TTL divides it too.
"""
from __future__ import annotations

from exchange.wire import Wire

BUCKET_MS = 1_000


class ReplayWindow:
    """Committed tx ids by expiry bucket; pruned by block time, deterministic in content and order."""

    __slots__ = ("buckets", "size", "_floor")

    def __init__(self) -> None:
        self.buckets: dict[int, dict[str, None]] = {}     # ids in the order they came: a bucket only grows
        self.size = 0
        self._floor = 0   # every bucket below this has been pruned

    def seen(self, tx_id: str, expires: int) -> bool:
        bucket = self.buckets.get(expires // BUCKET_MS)
        return bucket is not None and tx_id in bucket

    def add(self, tx_id: str, expires: int) -> None:
        key = expires // BUCKET_MS
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = {}
        if tx_id not in bucket:
            bucket[tx_id] = None
            self.size += 1

    def prune(self, block_time_ms: int) -> None:
        """Forget every bucket whose latest possible `expires` is at or below `block_time_ms`."""
        last = (block_time_ms + 1) // BUCKET_MS - 1   # bucket k holds expires up to k*B + B - 1
        if last < self._floor:
            return
        buckets = self.buckets
        if last - self._floor > len(buckets):
            stale = [key for key in buckets if key <= last]
        else:
            stale = [key for key in range(self._floor, last + 1) if key in buckets]
        for key in stale:
            self.size -= len(buckets.pop(key))
        self._floor = last + 1

    def rows(self) -> list[Wire]:
        """Canonical content: `[[bucket, [ids sorted]], ...]` by bucket."""
        return [[key, sorted(self.buckets[key])] for key in sorted(self.buckets)]

    @classmethod
    def from_rows(cls, rows: list[Wire], block_time_ms: int) -> ReplayWindow:
        """Rebuild from `rows()` (already validated by the caller)."""
        window = cls()
        for key, ids in rows:
            window.buckets[key] = dict.fromkeys(ids)
            window.size += len(ids)
        window._floor = (block_time_ms + 1) // BUCKET_MS
        return window

    def __len__(self) -> int:
        return self.size
