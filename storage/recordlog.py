"""RecordLog: an append-only log of byte records at consecutive integer indexes (the chain uses the height).

Records live in segment files of about `segment_bytes` each (format in `storage.frames`), so compaction deletes
whole files. An append batch is written and fdatasync'ed as one unit: it lands whole or not at all, also
across a crash (a batch whose end never reached the disk is a torn tail, cut at open). A failed write or sync
truncates the file back to where the batch began; if even that fails, the log refuses appends (kind `failed`)
until it is reopened, and the error says the outcome is unknown.

Opening reads every segment and tells a torn tail (cut, reported in `RecoveryReport.torn_bytes`) from damage
(kept on disk, reported with the byte ranges and the exact indexes missing). The records after damage stay
readable (`intact` reads every one, stepping over the gaps). Missing records are put back with `repair`;
compaction is `truncate_before`; `truncate_after` drops a damaged tail once the caller has decided to.

A small manifest (an AtomicDocument: first live index, newest segment) lets open notice a lost first or last
segment, which the files alone could not show. What no log can tell: a newest segment cut short by the disk
looks like a torn write, so the caller checks the last index against its own durable markers (a validator's
vote record names the height it reached).

Threads: one writer at a time (a GroupCommit worker, or the caller); readers may run meanwhile from any thread.

Over 500 lines on purpose: open, append, repair and truncation all keep one segment index true across
crashes; split, that invariant would be spread over modules.
"""
from __future__ import annotations

import json
import logging
import os
from array import array
from threading import Lock, RLock
from typing import Iterator, Mapping, Sequence

from storage.atomic import AtomicDocument
from storage.errors import CLOSED, DAMAGED, FAILED, IO_ERROR, MISSING, StorageError
from storage.frames import (DATA_START, FRAME_OVERHEAD, decode_frame, encode_batch, encode_segment_header,
                            frame_length)
from storage.fs import TMP_SUFFIX, FileHandle, FileSystem, OsFileSystem, replace_file
from storage.recovery import Damage, RecoveryReport
from storage.segments import Segment, load_segment, parse_segment_name, segment_path, unreadable_segment

log = logging.getLogger("storage.recordlog")

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
MAX_SEGMENT_BYTES = 1024 * 1024 * 1024  # offsets are 32-bit: a segment's cap plus one batch must stay below 4 GiB
MAX_BATCH_BYTES = 1024 * 1024 * 1024
READ_CHUNK = 1024 * 1024
MANIFEST = "manifest"


class RecordLog:
    """See the module docstring. Build with `RecordLog.open`."""

    def __init__(self, directory: str, fs: FileSystem, segment_bytes: int) -> None:
        if not DATA_START < segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be in ({DATA_START}, {MAX_SEGMENT_BYTES}]")
        self.directory = directory
        self.fs = fs
        self.segment_bytes = segment_bytes
        self._manifest = AtomicDocument(directory, MANIFEST, fs)
        self._segments: list[Segment] = []
        self._active: FileHandle | None = None  # handle of the newest segment, for appends
        self._first = 1
        self._next = 1
        self._missing: list[range] = []
        self._damage: list[Damage] = []
        self._tail_damaged = False
        self._failed: str | None = None
        self._closed = False
        self._unsynced = False   # records appended with sync=False since the active segment's last fdatasync
        self._write_lock = RLock()
        self._state_lock = Lock()
        self.report = RecoveryReport(directory, 1, 0)
        self.syncs = 0  # batches made durable

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, fs: FileSystem | None = None,
             segment_bytes: int = DEFAULT_SEGMENT_BYTES, start_index: int = 1) -> RecordLog:
        """Open (or create, starting at `start_index`) the log in `directory`; `.report` says what was found."""
        record_log = cls(os.fspath(directory), fs or OsFileSystem(), segment_bytes)
        record_log.report = record_log._recover(start_index)
        summary = record_log.report.summary()
        if not record_log.report.clean:
            log.warning("%s", summary)
        elif record_log.report.torn_bytes or record_log.report.notes:
            log.info("%s", summary)
        return record_log

    # --- state ------------------------------------------------------------------------------
    @property
    def first_index(self) -> int:
        """The lowest index still kept (equals next_index when the log is empty)."""
        return self._first

    @property
    def next_index(self) -> int:
        """The index the next appended record gets."""
        return self._next

    @property
    def last_index(self) -> int:
        """The highest index stored or known lost (first_index - 1 when empty)."""
        return self._next - 1

    @property
    def missing(self) -> tuple[range, ...]:
        """Index ranges between first and last index with no intact record."""
        return tuple(self._missing)

    @property
    def damage(self) -> tuple[Damage, ...]:
        return tuple(self._damage)

    @property
    def tail_damaged(self) -> bool:
        return self._tail_damaged

    def size_bytes(self) -> int:
        """Bytes on disk (what `stats` reports as "bytes", without building the rest: asked at every height)."""
        with self._state_lock:
            return sum(s.size for s in self._segments)

    def stats(self) -> dict[str, int]:
        """Sizes for /status: files, bytes on disk, records, and the memory the in-memory index takes."""
        with self._state_lock:
            return {"segments": len(self._segments), "bytes": sum(s.size for s in self._segments),
                    "first_index": self._first, "last_index": self._next - 1,
                    "records": self._next - self._first - sum(len(r) for r in self._missing),
                    "missing": sum(len(r) for r in self._missing),
                    "index_bytes": sum(s.offsets.itemsize * len(s.offsets) for s in self._segments)}

    # --- open -------------------------------------------------------------------------------
    def _recover(self, start_index: int) -> RecoveryReport:
        fs, directory = self.fs, self.directory
        fs.makedirs(directory)
        removed: list[str] = []
        notes: list[str] = []
        firsts: list[int] = []
        for name in fs.listdir(directory):
            first = parse_segment_name(name)
            if first is not None:
                firsts.append(first)
            elif name.endswith(TMP_SUFFIX) and parse_segment_name(name[:-len(TMP_SUFFIX)]) is not None:
                fs.remove_quietly(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
        firsts.sort()
        manifest = self._read_manifest(notes, bool(firsts))
        if manifest is None:
            first_index = firsts[0] if firsts else start_index
            last_listed = None
        else:
            first_index, last_listed = manifest
        # segments wholly below the first live index are leftovers of an interrupted compaction
        while len(firsts) > 1 and firsts[1] <= first_index:
            leftover = segment_path(directory, firsts.pop(0))
            fs.remove_quietly(leftover)
            removed.append(leftover)
        torn_bytes, torn_path, torn_indexes = 0, None, tuple[int, ...]()
        damage: list[Damage] = []
        for position, first in enumerate(firsts):
            path = segment_path(directory, first)
            is_newest = position == len(firsts) - 1
            upper = None if is_newest else firsts[position + 1]
            try:
                loaded = load_segment(path, first, fs.read_file(path), upper, is_newest)
            except StorageError as exc:
                if exc.kind != IO_ERROR:
                    raise
                loaded = unreadable_segment(path, first, str(exc), is_newest)
            compacted = (first < first_index and loaded.segment.last < first_index and not loaded.damage
                         and not loaded.tail_damaged)  # an interrupted truncate_before kept the file
            if loaded.empty_leftover or compacted:
                fs.remove_quietly(path)
                removed.append(path)
                continue
            if loaded.torn_bytes:
                self._cut(path, loaded.segment.size)
                torn_bytes, torn_path, torn_indexes = loaded.torn_bytes, path, tuple(loaded.torn_indexes)
            damage += loaded.damage
            notes += loaded.notes
            self._tail_damaged |= loaded.tail_damaged
            self._segments.append(loaded.segment)
        self._first = first_index
        top = max([first_index - 1] + [max(s.last, s.first - 1) for s in self._segments])
        if last_listed is not None and (not self._segments or self._segments[-1].first < last_listed):
            damage.append(Damage(segment_path(directory, last_listed), 0, 0, "newest segment file is missing"))
            self._tail_damaged = True
            top = max(top, last_listed - 1)
        self._next = top + 1
        self._damage = damage
        self._missing = self._find_missing()
        if self._segments:
            self._make_durable(self._segments[-1].path)
        if self._segments and not self._tail_damaged and self._segments[-1].salt is not None:
            self._active = fs.open_append(self._segments[-1].path)
        if not damage and not self._missing and not self._tail_damaged:
            newest = self._segments[-1].first if self._segments else None
            if manifest != (first_index, newest):
                self._store_manifest(newest)
        return RecoveryReport(directory, self._first, self._next - 1, torn_bytes, torn_path, torn_indexes,
                              tuple(damage), tuple(self._missing), self._tail_damaged, tuple(removed), tuple(notes))

    def _read_manifest(self, notes: list[str], have_segments: bool) -> tuple[int, int | None] | None:
        try:
            document = self._manifest.load()
            if document is None:
                if have_segments:
                    notes.append("manifest missing; rebuilt from the segment files (a lost first or last "
                                 "segment would go unnoticed this once)")
                return None
            content = json.loads(document.value)
            last = content["last_segment"]
            return int(content["first_index"]), None if last is None else int(last)
        except StorageError as exc:
            if exc.kind != DAMAGED:
                raise
            notes.append(f"{exc}; rebuilt from the segment files")
        except (ValueError, KeyError, TypeError) as exc:
            notes.append(f"manifest unreadable ({exc}); rebuilt from the segment files")
        return None

    def _store_manifest(self, newest_segment: int | None) -> None:
        self._manifest.store(json.dumps({"first_index": self._first, "last_segment": newest_segment}).encode())

    def _make_durable(self, path: str) -> None:
        """Sync what open found before building on it: after a restart (not a crash) the newest segment and the
        directory may still hold writes only the page cache has, and a crash later must not take them away
        from under records appended after them."""
        handle = self.fs.open_read(path)
        try:
            self.fs.fsync(handle)
        finally:
            self.fs.close(handle)
        self.fs.fsync_dir(self.directory)

    def _cut(self, path: str, size: int) -> None:
        handle = self.fs.open_append(path)
        try:
            self.fs.truncate(handle, size)
            self.fs.fsync(handle)
        finally:
            self.fs.close(handle)

    def _find_missing(self) -> list[range]:
        missing: list[range] = []
        expected = self._first
        for segment in self._segments:
            if segment.first > expected:
                missing.append(range(expected, segment.first))
                expected = segment.first
            for slot, offset in enumerate(segment.offsets):
                index = segment.first + slot
                if index < expected:
                    continue
                if not offset:
                    if missing and missing[-1].stop == index:
                        missing[-1] = range(missing[-1].start, index + 1)
                    else:
                        missing.append(range(index, index + 1))
                expected = index + 1
        if expected < self._next:
            if missing and missing[-1].stop == expected:
                missing[-1] = range(missing[-1].start, self._next)
            else:
                missing.append(range(expected, self._next))
        return missing

    # --- append -----------------------------------------------------------------------------
    def append(self, bodies: Sequence[bytes], index: int | None = None, *, sync: bool = True) -> int:
        """Durably append records at consecutive indexes from `next_index` (which `index`, if given, must equal);
        returns the first one's index. All of them are on disk when this returns; on StorageError none is.
        With `sync=False` they are written but not fdatasync'ed: durable at the next `sync()` (or at the
        next synced append, or when the log moves to a new segment); a crash of the machine before then
        may cut them off as a torn tail. For records the caller can fetch again."""
        with self._write_lock:
            self._check_writable()
            first = self._next
            if index is not None and index != first:
                raise ValueError(f"append at index {index}, but the log's next index is {first}")
            if not bodies:
                return first
            data_bytes = sum(len(b) for b in bodies) + FRAME_OVERHEAD * len(bodies)
            if data_bytes > MAX_BATCH_BYTES:
                raise ValueError(f"a batch of {data_bytes} bytes exceeds the {MAX_BATCH_BYTES}-byte limit")
            segment = self._segment_for_append()
            assert segment.salt is not None
            data = encode_batch(first, bodies, segment.salt)
            start = segment.size
            assert self._active is not None
            if self.fs.size(self._active) != start:  # appends land at the end of the file: it must be ours
                self._failed = (f"record log {self.directory}: {segment.path} is {self.fs.size(self._active)} "
                                f"bytes, the log expected {start}; something else wrote it; reopen the log")
                raise StorageError(FAILED, self._failed, path=segment.path)
            try:
                self.fs.write_all(self._active, data)
                if sync:
                    self.fs.fdatasync(self._active)
            except StorageError as exc:
                self._undo(segment, start, len(bodies), exc)
            offsets = array("I")
            position = start
            for body in bodies:
                offsets.append(position)
                position += FRAME_OVERHEAD + len(body)
            with self._state_lock:
                segment.offsets.extend(offsets)
                segment.size = position
                self._next = first + len(bodies)
            if sync:
                self.syncs += 1
            self._unsynced = not sync
            return first

    def sync(self) -> None:
        """Make records appended with `sync=False` durable."""
        with self._write_lock:
            self._sync_active()

    def _sync_active(self) -> None:
        if self._unsynced and self._active is not None:
            self.fs.fdatasync(self._active)
            self.syncs += 1
        self._unsynced = False

    def write_batch(self, bodies: Sequence[bytes]) -> list[int]:
        """`append` returning each record's index: the writer a GroupCommit of this log calls."""
        first = self.append(bodies)
        return list(range(first, first + len(bodies)))

    def _check_writable(self) -> None:
        if self._closed:
            raise StorageError(CLOSED, f"record log {self.directory} is closed")
        if self._failed is not None:
            raise StorageError(FAILED, self._failed, path=self.directory)
        if self._tail_damaged:
            raise StorageError(DAMAGED, f"record log {self.directory} ends in damaged records after index "
                               f"{self._next - 1}; appends wait until truncate_after() accepts their loss",
                               path=self.directory)

    def _undo(self, segment: Segment, size: int, count: int, cause: StorageError) -> None:
        """Remove a failed batch's bytes durably, then raise: the caller may retry. If the bytes cannot be
        removed, the log stops taking appends: after a crash they might come back."""
        assert self._active is not None
        try:
            self.fs.truncate(self._active, size)
            self.fs.fsync(self._active)
        except StorageError as undo_error:
            self._failed = (f"record log {self.directory}: appending {count} records failed ({cause}) and "
                            f"removing them failed too ({undo_error}); reopen the log to recover")
            raise StorageError(cause.kind, self._failed, errno=cause.errno, path=segment.path,
                               outcome_unknown=True) from cause
        raise StorageError(cause.kind, f"appending {count} records to {segment.path} failed, nothing of them "
                           f"was kept: {cause}", errno=cause.errno, path=segment.path) from cause

    def _segment_for_append(self) -> Segment:
        if self._segments and self._active is not None and self._segments[-1].size < self.segment_bytes:
            return self._segments[-1]
        self._sync_active()     # only the newest segment may end in records a crash can take
        first = self._next
        path = segment_path(self.directory, first)
        salt = os.urandom(8)
        handle = self.fs.open_append(path)
        try:
            if self.fs.size(handle):
                self.fs.truncate(handle, 0)
            self.fs.write_all(handle, encode_segment_header(first, salt))
            self.fs.fsync(handle)
            self.fs.fsync_dir(self.directory)
            self._store_manifest(first)
        except BaseException:
            self.fs.close(handle)
            self.fs.remove_quietly(path)
            raise
        segment = Segment(first, path, salt, array("I"), DATA_START)
        with self._state_lock:
            if self._active is not None:
                self.fs.close(self._active)
            self._active = handle
            if self._segments and self._segments[-1].first == first:
                self._segments.pop()
            self._segments.append(segment)
        return segment

    # --- read -------------------------------------------------------------------------------
    def get(self, index: int) -> bytes:
        """One record; kind `missing` if it is not stored, `damaged` if it no longer reads back intact."""
        for _, body in self.iterate(index, index + 1):
            return body
        raise StorageError(MISSING, f"record {index} is not in {self.directory}")

    def iterate(self, start: int | None = None, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(index, body) for start <= index < stop, in order, reading about a megabyte at a time. A missing
        record raises kind `missing` when the iteration reaches it."""
        index = self._first if start is None else start
        stop = self._next if stop is None else min(stop, self._next)
        if index < self._first and index < stop:
            raise StorageError(MISSING, f"record {index} was compacted away (the log starts at {self._first})")
        while index < stop:
            for item in self._read_chunk(index, stop):
                yield item
                index = item[0] + 1

    def intact(self, start: int | None = None, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(index, body) of every intact record with start <= index < stop, in order, stepping over the `missing`
        ranges (where `iterate` raises): for a reader that judges the loss itself from the records around it
        (the record just before a missing range and the one just after it are the nearest intact ones)."""
        low = self._first if start is None else max(start, self._first)
        high = self._next if stop is None else min(stop, self._next)
        for gap in (*self.missing, range(high, high)):
            if gap.stop <= low:
                continue
            yield from self.iterate(low, min(gap.start, high))
            low = gap.stop
            if low >= high:
                return

    def _read_chunk(self, index: int, stop: int) -> list[tuple[int, bytes]]:
        """Intact records from `index` on, up to a chunk's worth in one segment; [] when a concurrent rewrite
        replaced the segment meanwhile (the caller asks again)."""
        with self._state_lock:
            segment = self._segment_holding(index)
            if segment is None or segment.salt is None or not segment.offset_of(index):
                raise StorageError(MISSING, f"record {index} is missing from {self.directory} (damaged or "
                                   "lost; recover it from peers)", path=self.directory)
            path, salt, size = segment.path, segment.salt, segment.size
            offsets = [segment.offset_of(i) for i in range(index, min(stop - 1, segment.last) + 1)]
        begin = offsets[0]
        handle = self.fs.open_read(path)
        try:
            chunk = self.fs.pread(handle, min(size, begin + READ_CHUNK) - begin, begin)
            records: list[tuple[int, bytes]] = []
            for n, offset in enumerate(offsets):
                if not offset:
                    break
                total = frame_length(chunk, offset - begin)
                if total is None or offset - begin + total > len(chunk):
                    if records:
                        break
                    if total is not None:  # one record larger than a chunk: read it alone
                        chunk, begin = self.fs.pread(handle, total, offset), offset
                body = decode_frame(chunk, offset - begin, salt, index + n)
                if body is None:
                    with self._state_lock:
                        if segment.salt != salt or segment not in self._segments:
                            return records
                    raise StorageError(DAMAGED, f"record {index + n} in {path} at byte {offset} no longer reads "
                                       "back intact", path=path)
                records.append((index + n, body))
            return records
        finally:
            self.fs.close(handle)

    def _segment_holding(self, index: int) -> Segment | None:
        holder = None
        for segment in self._segments:
            if segment.first > index:
                break
            holder = segment
        return holder

    # --- compaction, repair, truncation ---------------------------------------------------------
    def truncate_before(self, index: int) -> None:
        """Forget records below `index`, deleting every segment that holds only such records. With `index`
        past the end the log becomes empty and the next append gets `index` (a node joining from a snapshot)."""
        with self._write_lock:
            self._check_open()
            self._sync_active()
            if index <= self._first:
                return
            keep_from = 0
            while keep_from < len(self._segments):
                following = self._segments[keep_from + 1] if keep_from + 1 < len(self._segments) else None
                ends_below = following.first <= index if following else index >= self._next
                if not ends_below:
                    break
                keep_from += 1
            doomed = self._segments[:keep_from]
            remaining = self._segments[keep_from:]
            old_first = self._first
            self._first = index
            try:
                self._store_manifest(remaining[-1].first if remaining else None)
            except StorageError:
                self._first = old_first
                raise
            with self._state_lock:
                self._segments = remaining
                if not remaining and self._active is not None:
                    self.fs.close(self._active)
                    self._active = None
                self._next = max(self._next, index)
                self._missing = [r for r in (range(max(r.start, index), r.stop) for r in self._missing) if r]
                gone = {segment.path for segment in doomed}
                self._damage = [d for d in self._damage if remaining and d.path not in gone]
                self._tail_damaged = self._tail_damaged and bool(remaining)
            for segment in doomed:
                self.fs.remove_quietly(segment.path)
            if doomed:
                self.fs.fsync_dir(self.directory)

    def truncate_after(self, index: int) -> None:
        """Drop every record after `index` and any damaged tail: the caller has decided those are lost (it will
        append what peers supply). The newest kept segment is rewritten; not atomic across a crash (a crash
        may leave the dropped records in place, never a gap)."""
        with self._write_lock:
            self._check_open()
            self._sync_active()
            if self._failed is not None:
                raise StorageError(FAILED, self._failed, path=self.directory)
            if not self._first - 1 <= index <= self._next - 1:
                raise ValueError(f"truncate_after({index}) outside {self._first - 1}..{self._next - 1}")
            keep = [s for s in self._segments if s.first <= index]
            doomed = [s for s in self._segments if s.first > index]
            self._store_manifest(keep[-1].first if keep else None)
            with self._state_lock:
                if self._active is not None:
                    self.fs.close(self._active)
                    self._active = None
                self._segments = keep
            for segment in reversed(doomed):
                self.fs.remove_quietly(segment.path)
            self.fs.fsync_dir(self.directory)
            if keep:
                newest = keep[-1]
                self._rewrite(newest, self._records_of(newest, self._first, index))
                self._active = self.fs.open_append(newest.path)
            with self._state_lock:
                self._next = index + 1
                self._tail_damaged = False
                self._damage = [d for d in self._damage if d.path not in {s.path for s in doomed}
                                and (not keep or d.path != keep[-1].path)]
                self._missing = self._find_missing()

    def repair(self, records: Mapping[int, bytes]) -> None:
        """Put back missing records (fetched from peers and verified by the caller). Each index must be one of
        `missing`; the segment that should hold it is rewritten whole, without its damaged bytes."""
        with self._write_lock:
            self._check_open()
            self._sync_active()
            if self._failed is not None:
                raise StorageError(FAILED, self._failed, path=self.directory)
            for index in records:
                if not any(index in r for r in self._missing):
                    raise ValueError(f"record {index} is not missing from {self.directory}")
            groups: dict[int | None, dict[int, bytes]] = {}
            for index, body in records.items():
                holder = self._segment_holding(index)
                groups.setdefault(holder.first if holder else None, {})[index] = body
            for first, bodies in sorted(groups.items(), key=lambda item: -1 if item[0] is None else item[0]):
                if first is None:
                    segment = Segment(min(bodies), segment_path(self.directory, min(bodies)), None, array("I"), 0)
                    self._rewrite(segment, sorted(bodies.items()))
                    with self._state_lock:
                        self._segments.insert(0, segment)
                    continue
                segment = next(s for s in self._segments if s.first == first)
                if segment is self._segments[-1] and self._tail_damaged:
                    raise StorageError(DAMAGED, f"{segment.path} ends in damage: call truncate_after() first")
                merged = dict(self._records_of(segment, self._first, segment.last))
                merged.update(bodies)
                self._rewrite(segment, sorted(merged.items()))
                if segment is self._segments[-1] and self._active is not None:
                    self.fs.close(self._active)
                    self._active = self.fs.open_append(segment.path)
                with self._state_lock:
                    self._damage = [d for d in self._damage if d.path != segment.path]
            with self._state_lock:
                self._missing = self._find_missing()

    def _records_of(self, segment: Segment, low: int, high: int) -> list[tuple[int, bytes]]:
        """The intact records of a segment with low <= index <= high, read in one go."""
        data = self.fs.read_file(segment.path)
        records = []
        for index in segment.present():
            if low <= index <= high:
                body = decode_frame(data, segment.offset_of(index), segment.salt or b"", index)
                if body is None:
                    raise StorageError(DAMAGED, f"record {index} in {segment.path} no longer reads back intact",
                                       path=segment.path)
                records.append((index, body))
        return records

    def _rewrite(self, segment: Segment, records: list[tuple[int, bytes]]) -> None:
        """Replace a segment file by one holding exactly `records` (each its own batch), atomically."""
        salt = os.urandom(8)
        chunks = [encode_segment_header(segment.first, salt)]
        offsets: dict[int, int] = {}
        position = DATA_START
        for index, body in records:
            frame = encode_batch(index, [body], salt)
            offsets[index] = position
            position += len(frame)
            chunks.append(frame)
        replace_file(self.fs, segment.path, chunks)
        table = array("I", bytes(4 * ((max(offsets) - segment.first + 1) if offsets else 0)))
        for index, offset in offsets.items():
            table[index - segment.first] = offset
        with self._state_lock:
            segment.salt, segment.offsets, segment.size = salt, table, position

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(CLOSED, f"record log {self.directory} is closed")

    def close(self) -> None:
        with self._write_lock:
            self._closed = True
            try:
                self._sync_active()
            except StorageError as exc:
                log.warning("record log %s: records appended unsynced could not be synced at close: %s",
                            self.directory, exc)
            if self._active is not None:
                self.fs.close(self._active)
                self._active = None

