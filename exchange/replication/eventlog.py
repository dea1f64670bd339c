"""EventLog: the append-only file DATA_DIR/events.log that lets a node rebuild its book without the network.

Each record is `[u32 length][u32 crc32][msgpack body]` (big-endian). Opening the log reads every
record; a torn or corrupt tail (a crash mid-write: short header, short body, or a checksum that does
not match) is reported, cut off and overwritten by the next append, so the file always ends on a
whole record. `append` writes; `sync` makes everything written durable (fsync). `GroupCommit` runs
write+fsync in a worker thread, batching whatever was queued meanwhile into one fsync, and resolves
a future per batch so the API can answer only once an order is on disk.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger("exchange.eventlog")

HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 * 1024 * 1024


def encode_record(record: Any) -> bytes:
    body = msgpack.packb(record, use_bin_type=True)
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_records(data: bytes) -> tuple[list[Any], int, str | None]:
    """(records, length of the valid prefix, why the rest was dropped or None)."""
    records: list[Any] = []
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < HEADER.size:
            return records, offset, "torn header"
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length > MAX_RECORD_BYTES:
            return records, offset, f"impossible record length {length}"
        if start + length > end:
            return records, offset, "torn record"
        body = data[start:start + length]
        if zlib.crc32(body) != crc:
            return records, offset, "checksum mismatch"
        try:
            records.append(msgpack.unpackb(body, raw=False, strict_map_key=False))
        except (ValueError, msgpack.UnpackException) as exc:
            return records, offset, f"undecodable record ({exc})"
        offset = start + length
    return records, offset, None


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.size = 0
        self.records_written = 0
        self.syncs = 0
        self.dropped_tail = 0

    def open(self) -> list[Any]:
        """Read every whole record, cut a torn tail, and get ready to append."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        records, valid, problem = decode_records(data)
        if problem is not None:
            self.dropped_tail = len(data) - valid
            log.warning("event log %s: %s at byte %d; dropping the last %d bytes (a crash mid-write)",
                        self.path, problem, valid, self.dropped_tail)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        if problem is not None:
            os.ftruncate(self._fd, valid)
            os.fsync(self._fd)
        os.lseek(self._fd, valid, os.SEEK_SET)
        self.size = valid
        return records

    def append(self, records: list[Any]) -> None:
        if not records:
            return
        data = b"".join(encode_record(r) for r in records)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)
        self.records_written += len(records)

    def sync(self) -> None:
        os.fsync(self._fd)
        self.syncs += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class GroupCommit:
    """Batches appends: one write+fsync in a worker thread per batch; `commit()` futures resolve after it."""

    def __init__(self, eventlog: EventLog) -> None:
        self.log = eventlog
        self._queued: list[Any] = []
        self._waiters: list[asyncio.Future] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="eventlog.commit")

    def add(self, records: list[Any]) -> None:
        """Queue records for the next batch (no durability promise needed by the caller)."""
        if records:
            self._queued.extend(records)
            self._wake.set()

    def commit(self) -> asyncio.Future:
        """A future resolved once everything queued so far is durable."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        return future

    async def _run(self) -> None:
        while not (self._stopping and not self._queued and not self._waiters):
            await self._wake.wait()
            self._wake.clear()
            records, self._queued = self._queued, []
            waiters, self._waiters = self._waiters, []
            try:
                await asyncio.to_thread(self._write, records)
            except OSError as exc:
                log.error("event log write failed: %s", exc)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            self.batches += 1
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _write(self, records: list[Any]) -> None:
        self.log.append(records)
        self.log.sync()

    async def stop(self) -> None:
        """Write and fsync what is queued, then close. The writer drains and exits by itself: cancelling it
        mid-batch would leave its worker thread writing while this closes the file."""
        self._stopping = True
        if self._task is not None:
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._queued:
            self._write(self._queued)
            self._queued = []
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.log.close()
