"""FaultyFS: an in-memory file system that fails on request and can "lose power".

It keeps, per file, what is durable (as of the last fsync) apart from what reads see, and per directory the
names made durable by the last directory fsync apart from the creations, renames and removals since. Faults:

- `fail(kind, errno, after=N)`: the (N+1)th call of a kind raises the StorageError the kernel would cause.
  Kinds: `create` (open_append of a new file), `open`, `write`, `read` (pread, read_file), `fsync`,
  `fdatasync`, `truncate`, `rename`, `unlink`, `listdir`, `fsync_dir`, `mkdir`. `short_write(keep)` makes a
  write return fewer bytes instead.
- `set_capacity(bytes)`: a disk of that size; a write past it is short, then ENOSPC. Raise it (or remove
  files) to give space back.
- `crash_at(point)`: the `point`th call among the operations that change the disk (counting from 0; see
  `CRASH_KINDS`) raises `Crash` instead, and every later call raises it too. `after_crash(seed)` then builds
  the disk a real crash could leave: everything fsynced survives; each file's unsynced writes are lost,
  kept, or kept torn (cut at an arbitrary byte, or zero-filled from a sector boundary, as a file system that
  extended the size before writing the data leaves it); a directory keeps a prefix, chosen by the seed, of
  the changes made since its last fsync. `hostile=True` adds what reordered page writeback can leave: random
  unsynced sectors never written.

Directories are durable as soon as they are made (the stores create them once, before anything else).
"""
from __future__ import annotations

import errno as errno_codes
import posixpath
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from storage.errors import IO_ERROR, StorageError, from_errno
from storage.fs import FileHandle, FileSystem

SECTOR = 512
CRASH_KINDS = frozenset({"create", "write", "fsync", "fdatasync", "truncate", "rename", "unlink", "fsync_dir"})


class Crash(BaseException):
    """The simulated machine lost power. A BaseException so that no `except Exception` in the code under test
    can swallow it; build the disk it left with `FaultyFS.after_crash`."""


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)  # ("write", offset, bytes) / ("truncate", size, b"")
    links: int = 0
    opened: int = 0


@dataclass
class _Dir:
    entries: dict[str, int] = field(default_factory=dict)
    durable: dict[str, int] = field(default_factory=dict)
    pending: list[dict[str, int]] = field(default_factory=list)  # the entries after each change since the last fsync

    def changed(self) -> None:
        self.pending.append(dict(self.entries))


@dataclass
class _Fault:
    kind: str
    errno: int
    after: int
    times: int
    path: str | None
    keep: int | None = None  # a short write keeping this many bytes instead of an error


class _MemHandle(FileHandle):
    __slots__ = ("ino", "closed")

    def __init__(self, path: str, ino: int) -> None:
        super().__init__(path)
        self.ino = ino
        self.closed = False


def _apply(data: bytearray, op: tuple[str, int, bytes]) -> None:
    kind, position, payload = op
    if kind == "write":
        if position > len(data):
            data.extend(bytes(position - len(data)))
        data[position:position + len(payload)] = payload
    elif position < len(data):
        del data[position:]
    else:
        data.extend(bytes(position - len(data)))


class FaultyFS(FileSystem):
    """See the module docstring. Thread-safe: a store may call it from a worker thread."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._dirs: dict[str, _Dir] = {"/": _Dir()}
        self._inodes: dict[int, _Inode] = {}
        self._next_ino = 1
        self._faults: list[_Fault] = []
        self.capacity: int | None = None
        self.calls: Counter[str] = Counter()
        self.points = 0  # operations of CRASH_KINDS so far
        self.crash_point: int | None = None
        self.crashed = False

    # --- fault control ----------------------------------------------------------------------
    def fail(self, kind: str, errno: int = errno_codes.EIO, *, after: int = 0, times: int = 1,
             path: str | None = None) -> None:
        """Make the (after+1)th call of `kind` (whose path contains `path`, if given) and the next `times`-1
        fail with `errno`; times=-1 fails every call from then on until `clear_faults`."""
        with self._lock:
            self._faults.append(_Fault(kind, errno, after, times, path))

    def short_write(self, keep: int, *, after: int = 0, path: str | None = None) -> None:
        """Make the (after+1)th write write only its first `keep` bytes (and say so by its return value)."""
        with self._lock:
            self._faults.append(_Fault("write", 0, after, 1, path, keep=keep))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_capacity(self, capacity: int | None) -> None:
        """Bytes the whole disk holds (None: unlimited). Lowering it below what is used makes every growing
        write fail with ENOSPC; raising it gives the space back."""
        with self._lock:
            self.capacity = capacity

    def used_bytes(self) -> int:
        with self._lock:
            return sum(len(i.data) for i in self._inodes.values() if i.links or i.opened)

    def crash_at(self, point: int) -> None:
        """Raise Crash at the `point`th disk-changing operation (0-based, counted since this FS was made)."""
        with self._lock:
            self.crash_point = point

    # --- inspection and direct damage (for tests) -------------------------------------------------
    def files(self) -> dict[str, bytes]:
        """Every file's current content, by path."""
        with self._lock:
            return {posixpath.join(d, name): bytes(self._inodes[ino].data)
                    for d, directory in self._dirs.items() for name, ino in directory.entries.items()}

    def damage(self, path: str, offset: int, xor: int = 0x01) -> None:
        """Flip bits of one byte in place, durably: what a bad disk does to a stopped node's file."""
        with self._lock:
            inode = self._inode_at(self._norm(path))
            inode.data[offset] ^= xor
            inode.durable = bytes(inode.data)

    def put(self, path: str, data: bytes) -> None:
        """Set a file's content durably, creating it (and its name) if needed."""
        with self._lock:
            path = self._norm(path)
            directory, name = self._parent(path)
            if name not in directory.entries:
                directory.entries[name] = self._new_inode()
                self._inodes[directory.entries[name]].links = 1
                directory.durable = dict(directory.entries)
            inode = self._inodes[directory.entries[name]]
            inode.data = bytearray(data)
            inode.durable = bytes(data)
            inode.pending = []

    # --- crash ------------------------------------------------------------------------------
    def after_crash(self, seed: int = 0, *, mode: str = "random", hostile: bool = False) -> FaultyFS:
        """A new FaultyFS holding what the disk could contain after a crash now. `mode` "random" lets the seed
        choose per file and directory; "lose" keeps only what was synced; "keep" keeps everything written."""
        rng = random.Random(seed)
        with self._lock:
            image = FaultyFS()
            image.capacity = self.capacity
            survivors: dict[int, int] = {}
            for path in sorted(self._dirs):
                directory = self._dirs[path]
                states = [directory.durable] + directory.pending
                choice = {"lose": 0, "keep": len(states) - 1}.get(mode, rng.randrange(len(states)))
                image._dirs[path] = _Dir()
                for name, ino in sorted(states[choice].items()):
                    if ino not in survivors:
                        survivors[ino] = image._new_inode()
                        content = self._crashed_content(self._inodes[ino], rng, mode, hostile)
                        image._inodes[survivors[ino]].data = bytearray(content)
                        image._inodes[survivors[ino]].durable = content
                    image._inodes[survivors[ino]].links += 1
                    image._dirs[path].entries[name] = survivors[ino]
                image._dirs[path].durable = dict(image._dirs[path].entries)
            return image

    @staticmethod
    def _crashed_content(inode: _Inode, rng: random.Random, mode: str, hostile: bool) -> bytes:
        if not inode.pending:
            return inode.durable
        base = bytearray(inode.durable)
        if mode == "lose":
            return bytes(base)
        if mode == "keep":
            return bytes(inode.data)
        outcome = rng.choice(["lost", "kept", "torn", "zero_tail"] + (["holes"] if hostile else []))
        if outcome == "lost":
            return bytes(base)
        if outcome == "torn":
            applied = rng.randrange(len(inode.pending))
            for op in inode.pending[:applied]:
                _apply(base, op)
            kind, position, payload = inode.pending[applied]
            if kind == "write":
                _apply(base, (kind, position, payload[:rng.randrange(len(payload) + 1)]))
            return bytes(base)
        data = bytearray(inode.data)
        new_from = len(inode.durable)
        if outcome == "zero_tail" and len(data) > new_from:
            first_sector = -(-new_from // SECTOR)
            last_sector = (len(data) - 1) // SECTOR
            if first_sector <= last_sector:
                start = rng.randint(first_sector, last_sector) * SECTOR
                data[start:] = bytes(len(data) - start)
        elif outcome == "holes":
            for sector in range(new_from // SECTOR, -(-len(data) // SECTOR)):
                if rng.random() < 0.5:
                    start, end = max(sector * SECTOR, new_from), min((sector + 1) * SECTOR, len(data))
                    data[start:end] = bytes(end - start)
        return bytes(data)

    # --- internals --------------------------------------------------------------------------
    def _norm(self, path: str) -> str:
        return posixpath.normpath("/" + str(path).lstrip("/"))

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parent, name = posixpath.split(path)
        directory = self._dirs.get(parent)
        if directory is None or not name:
            raise from_errno(errno_codes.ENOENT, "open", path)
        return directory, name

    def _inode_at(self, path: str) -> _Inode:
        directory, name = self._parent(path)
        if name not in directory.entries:
            raise from_errno(errno_codes.ENOENT, "open", path)
        return self._inodes[directory.entries[name]]

    def _new_inode(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        self._inodes[ino] = _Inode()
        return ino

    def _begin(self, kind: str, action: str, path: str) -> _Fault | None:
        """Count the call, crash or fail it if told to; returns a short-write fault to apply."""
        if self.crashed:
            raise Crash(f"{kind} {path} after the crash")
        self.calls[kind] += 1
        if kind in CRASH_KINDS:
            if self.crash_point is not None and self.points >= self.crash_point:
                self.crashed = True
                raise Crash(f"crash at point {self.points}: {kind} {path}")
            self.points += 1
        for fault in self._faults:
            if fault.kind != kind or (fault.path is not None and fault.path not in path):
                continue
            if fault.after > 0:
                fault.after -= 1
                continue
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
            if fault.keep is not None:
                return fault
            raise from_errno(fault.errno, action, path)
        return None

    def _handle_inode(self, handle: FileHandle) -> _Inode:
        assert isinstance(handle, _MemHandle), handle
        if handle.closed:
            raise StorageError(IO_ERROR, f"{handle.path} is closed", path=handle.path)
        return self._inodes[handle.ino]

    # --- FileSystem -------------------------------------------------------------------------
    def open_append(self, path: str) -> FileHandle:
        with self._lock:
            path = self._norm(path)
            directory, name = self._parent(path)
            if name not in directory.entries:
                self._begin("create", "create", path)
                ino = self._new_inode()
                self._inodes[ino].links = 1
                directory.entries[name] = ino
                directory.changed()
            else:
                self._begin("open", "open", path)
            ino = directory.entries[name]
            self._inodes[ino].opened += 1
            return _MemHandle(path, ino)

    def open_read(self, path: str) -> FileHandle:
        with self._lock:
            path = self._norm(path)
            self._begin("open", "open", path)
            directory, name = self._parent(path)
            if name not in directory.entries:
                raise from_errno(errno_codes.ENOENT, "open", path)
            ino = directory.entries[name]
            self._inodes[ino].opened += 1
            return _MemHandle(path, ino)

    def write(self, handle: FileHandle, data: bytes) -> int:
        with self._lock:
            short = self._begin("write", "write", handle.path)
            inode = self._handle_inode(handle)
            data = bytes(data)
            if short is not None and short.keep is not None:
                data = data[:short.keep]
            if self.capacity is not None:
                room = self.capacity - self.used_bytes()
                if room <= 0 and data:
                    raise from_errno(errno_codes.ENOSPC, "write", handle.path)
                data = data[:room]
            op = ("write", len(inode.data), data)
            _apply(inode.data, op)
            inode.pending.append(op)
            return len(data)

    def pread(self, handle: FileHandle, size: int, offset: int) -> bytes:
        with self._lock:
            self._begin("read", "read", handle.path)
            return bytes(self._handle_inode(handle).data[offset:offset + size])

    def size(self, handle: FileHandle) -> int:
        with self._lock:
            if self.crashed:
                raise Crash(f"stat {handle.path} after the crash")
            return len(self._handle_inode(handle).data)

    def fsync(self, handle: FileHandle) -> None:
        self._sync(handle, "fsync")

    def fdatasync(self, handle: FileHandle) -> None:
        self._sync(handle, "fdatasync")

    def _sync(self, handle: FileHandle, kind: str) -> None:
        with self._lock:
            self._begin(kind, kind, handle.path)
            inode = self._handle_inode(handle)
            inode.durable = bytes(inode.data)
            inode.pending = []

    def truncate(self, handle: FileHandle, size: int) -> None:
        with self._lock:
            self._begin("truncate", "truncate", handle.path)
            inode = self._handle_inode(handle)
            op = ("truncate", size, b"")
            _apply(inode.data, op)
            inode.pending.append(op)

    def close(self, handle: FileHandle) -> None:
        with self._lock:
            assert isinstance(handle, _MemHandle), handle
            if not handle.closed:
                handle.closed = True
                self._inodes[handle.ino].opened -= 1

    def read_file(self, path: str) -> bytes:
        with self._lock:
            path = self._norm(path)
            self._begin("read", "read", path)
            return bytes(self._inode_at(path).data)

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            src, dst = self._norm(src), self._norm(dst)
            self._begin("rename", f"rename {src} to", dst)
            src_dir, src_name = self._parent(src)
            dst_dir, dst_name = self._parent(dst)
            if src_name not in src_dir.entries:
                raise from_errno(errno_codes.ENOENT, f"rename {src} to", dst)
            ino = src_dir.entries.pop(src_name)
            replaced = dst_dir.entries.get(dst_name)
            if replaced is not None:
                self._inodes[replaced].links -= 1
            dst_dir.entries[dst_name] = ino
            src_dir.changed()
            if dst_dir is not src_dir:
                dst_dir.changed()

    def unlink(self, path: str) -> None:
        with self._lock:
            path = self._norm(path)
            self._begin("unlink", "remove", path)
            directory, name = self._parent(path)
            if name not in directory.entries:
                raise from_errno(errno_codes.ENOENT, "remove", path)
            self._inodes[directory.entries.pop(name)].links -= 1
            directory.changed()

    def listdir(self, path: str) -> list[str]:
        with self._lock:
            path = self._norm(path)
            self._begin("listdir", "list", path)
            directory = self._dirs.get(path)
            if directory is None:
                raise from_errno(errno_codes.ENOENT, "list", path)
            subdirs = [posixpath.basename(d) for d in self._dirs if d != "/" and posixpath.dirname(d) == path]
            return sorted(list(directory.entries) + subdirs)

    def fsync_dir(self, path: str) -> None:
        with self._lock:
            path = self._norm(path)
            self._begin("fsync_dir", "fsync directory", path)
            directory = self._dirs.get(path)
            if directory is None:
                raise from_errno(errno_codes.ENOENT, "fsync directory", path)
            directory.durable = dict(directory.entries)
            directory.pending = []

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        with self._lock:
            path = self._norm(path)
            self._begin("mkdir", "create directory", path)
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts) + 1):
                self._dirs.setdefault("/" + "/".join(parts[:depth]), _Dir())

    def exists(self, path: str) -> bool:
        with self._lock:
            path = self._norm(path)
            if path in self._dirs:
                return True
            parent, name = posixpath.split(path)
            return parent in self._dirs and name in self._dirs[parent].entries
