"""SnapshotStore: the exchange state at a height, one checksummed file per snapshot, the last K kept.

A snapshot is written by `replace_file` (temporary file, fsync, rename, directory fsync), so a crash leaves
the previous snapshots and either none or all of the new one. Loading takes the newest snapshot that reads
back intact; a damaged newer one is skipped with a warning naming the file (the chain's certified state hash
is the caller's check that it is also the right state).

File `snapshot-<height, 20 digits>.snap`:
    magic "XNSNAP01" | height u64 | body | body length u64 | crc32(body) u32 | magic "XNSE"
The trailer goes last so the body can be streamed from chunks without knowing its length first.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Iterable

from storage.errors import DAMAGED, NOT_FOUND, StorageError
from storage.fs import TMP_SUFFIX, FileSystem, OsFileSystem, replace_file

log = logging.getLogger("storage.snapshots")

SNAP_HEAD = struct.Struct(">8sQ")
SNAP_TAIL = struct.Struct(">QI4s")
SNAP_MAGIC = b"XNSNAP01"
SNAP_END = b"XNSE"
_NAME = re.compile(r"^snapshot-(\d{20})\.snap$")
CHECK_PIECE = 1 << 20       # bytes read at a time to check a snapshot's checksum
SYNC_EVERY = 1 << 20         # bytes written between fdatasyncs while saving (`replace_file`)


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot. `skipped` names newer snapshot files passed over as damaged."""

    height: int
    data: bytes
    path: str
    skipped: tuple[str, ...] = ()


def decode_snapshot(raw: bytes, height: int) -> bytes:
    """The body, or ValueError saying what is wrong."""
    if len(raw) < SNAP_HEAD.size + SNAP_TAIL.size:
        raise ValueError(f"{len(raw)} bytes, too short for a snapshot")
    magic, stored_height = SNAP_HEAD.unpack_from(raw)
    length, crc, end = SNAP_TAIL.unpack_from(raw, len(raw) - SNAP_TAIL.size)
    body = raw[SNAP_HEAD.size:len(raw) - SNAP_TAIL.size]
    if magic != SNAP_MAGIC or end != SNAP_END:
        raise ValueError("not a snapshot file (bad magic)")
    if length != len(body):
        raise ValueError(f"body is {len(body)} bytes, the trailer says {length}")
    if zlib.crc32(body) != crc:
        raise ValueError("checksum mismatch")
    if stored_height != height:
        raise ValueError(f"holds height {stored_height}, its name says {height}")
    return body


class SnapshotStore:
    """Snapshots in `directory`; `keep` is how many of the newest survive each save. Saves may come from a
    worker thread and the event loop at once: one at a time, so neither prunes the file the other is writing."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 2, fs: FileSystem | None = None) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = os.fspath(directory)
        self.keep = keep
        self.fs = fs or OsFileSystem()
        self._saving = threading.Lock()

    def path_for(self, height: int) -> str:
        return os.path.join(self.directory, f"snapshot-{height:020d}.snap")

    def heights(self) -> list[int]:
        """Heights of the snapshot files present, newest first (intact or not)."""
        if not self.fs.exists(self.directory):
            return []
        found = [int(m.group(1)) for m in map(_NAME.match, self.fs.listdir(self.directory)) if m]
        return sorted(found, reverse=True)

    def stats(self) -> dict[str, int]:
        """For /status: how many snapshot files, their bytes, the newest height (0 when none). A file listed and
        then pruned by a save in a worker thread before it is opened is not counted."""
        heights: list[int] = []
        total = 0
        for height in self.heights():
            try:
                handle = self.fs.open_read(self.path_for(height))
            except StorageError as exc:
                if exc.kind != NOT_FOUND:
                    raise
                continue
            try:
                total += self.fs.size(handle)
            finally:
                self.fs.close(handle)
            heights.append(height)
        return {"count": len(heights), "bytes": total, "newest_height": heights[0] if heights else 0}

    def save(self, height: int, chunks: bytes | Iterable[bytes]) -> str:
        """Durably store the state at `height` (bytes, or an iterable of chunks to stream); returns the path.
        Older snapshots beyond the newest `keep` are deleted afterwards."""
        path = self.path_for(height)
        parts = [chunks] if isinstance(chunks, bytes) else chunks
        with self._saving:
            self.fs.makedirs(self.directory)
            replace_file(self.fs, path, _framed(height, parts), sync_every=SYNC_EVERY)
            self._prune()
        return path

    def _prune(self) -> None:
        for height in self.heights()[self.keep:]:
            self.fs.remove_quietly(self.path_for(height))
        for name in self.fs.listdir(self.directory):
            if name.endswith(TMP_SUFFIX) and _NAME.match(name[:-len(TMP_SUFFIX)]):
                self.fs.remove_quietly(os.path.join(self.directory, name))

    def load(self, height: int) -> Snapshot:
        """The snapshot at exactly `height`; kind `not_found` if absent, `damaged` if it fails its checks."""
        path = self.path_for(height)
        try:
            return Snapshot(height, decode_snapshot(self.fs.read_file(path), height), path)
        except ValueError as exc:
            raise StorageError(DAMAGED, f"snapshot {path} is damaged: {exc}", path=path) from None

    def check(self, height: int) -> int:
        """The body length of the snapshot at `height` once its checksum holds, read in pieces (never whole in
        memory); kind `not_found` if absent, `damaged` if it fails its checks."""
        path = self.path_for(height)
        handle = self.fs.open_read(path)
        try:
            size = self.fs.size(handle)
            head, tail = SNAP_HEAD.size, SNAP_TAIL.size
            if size < head + tail:
                raise ValueError(f"{size} bytes, too short for a snapshot")
            magic, stored_height = SNAP_HEAD.unpack(self.fs.pread(handle, head, 0))
            length: int
            length, crc, end = SNAP_TAIL.unpack(self.fs.pread(handle, tail, size - tail))
            if magic != SNAP_MAGIC or end != SNAP_END:
                raise ValueError("not a snapshot file (bad magic)")
            if length != size - head - tail or stored_height != height:
                raise ValueError(f"holds height {stored_height} and {size - head - tail} body bytes, its name says "
                                 f"{height} and its trailer {length}")
            running = 0
            for offset in range(0, length, CHECK_PIECE):
                running = zlib.crc32(self.fs.pread(handle, min(CHECK_PIECE, length - offset), head + offset), running)
            if running != crc:
                raise ValueError("checksum mismatch")
            return length
        except (ValueError, struct.error) as exc:
            raise StorageError(DAMAGED, f"snapshot {path} is damaged: {exc}", path=path) from None
        finally:
            self.fs.close(handle)

    def read_body(self, height: int, offset: int, size: int) -> bytes:
        """Up to `size` bytes of the body of the snapshot at `height`, from `offset` (checked whole by `check`)."""
        handle = self.fs.open_read(self.path_for(height))
        try:
            body = self.fs.size(handle) - SNAP_HEAD.size - SNAP_TAIL.size
            return self.fs.pread(handle, max(0, min(size, body - offset)), SNAP_HEAD.size + offset)
        finally:
            self.fs.close(handle)

    def load_newest(self) -> Snapshot | None:
        """The newest intact snapshot (None if there is none); damaged newer ones are skipped, each with a
        warning naming the file."""
        skipped: list[str] = []
        for height in self.heights():
            try:
                snapshot = self.load(height)
            except StorageError as exc:
                if exc.kind not in (DAMAGED, NOT_FOUND):
                    raise
                log.warning("%s; falling back to an older snapshot", exc)
                skipped.append(self.path_for(height))
                continue
            self.fs.fsync_dir(self.directory)  # after a restart the rename may be in the page cache only
            return Snapshot(snapshot.height, snapshot.data, snapshot.path, tuple(skipped))
        if skipped:
            log.error("no intact snapshot in %s (damaged: %s)", self.directory, ", ".join(skipped))
        return None


def _framed(height: int, chunks: Iterable[bytes]) -> Iterable[bytes]:
    yield SNAP_HEAD.pack(SNAP_MAGIC, height)
    crc, length = 0, 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
        length += len(chunk)
        yield chunk
    yield SNAP_TAIL.pack(length, crc, SNAP_END)
