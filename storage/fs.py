"""The file-system seam: the few operations the stores use, so tests can swap in `FaultyFS`.

Every method raises `StorageError` (never a bare OSError), so a store needs one `except`. Paths are plain
strings. `OsFileSystem` is the real thing; `FaultyFS` (tests/faultyfs.py) models what a crash can leave.
`replace_file` is the one durable write-then-rename sequence the document and snapshot stores share.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Callable, Iterable, TypeVar

from storage.errors import IO_ERROR, StorageError

TMP_SUFFIX = ".tmp"
_T = TypeVar("_T")


class FileHandle:
    """An open file. Each file system subclasses it with what it needs to find the file again."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class FileSystem(ABC):
    """Operations on files and directories; all of them may raise StorageError."""

    @abstractmethod
    def open_append(self, path: str) -> FileHandle:
        """Open for reading and appending, creating the file (mode 0600) if it is missing."""

    @abstractmethod
    def open_read(self, path: str) -> FileHandle:
        """Open an existing file for reading; a missing one raises kind `not_found`."""

    @abstractmethod
    def write(self, handle: FileHandle, data: bytes) -> int:
        """Append `data` at the end of the file; returns how many bytes were written (maybe fewer)."""

    @abstractmethod
    def pread(self, handle: FileHandle, size: int, offset: int) -> bytes:
        """Up to `size` bytes at `offset` (fewer at the end of the file)."""

    @abstractmethod
    def size(self, handle: FileHandle) -> int:
        """The file's current size."""

    @abstractmethod
    def fsync(self, handle: FileHandle) -> None:
        """Make the file's data and metadata durable."""

    @abstractmethod
    def fdatasync(self, handle: FileHandle) -> None:
        """Make the file's data (and its size) durable."""

    @abstractmethod
    def truncate(self, handle: FileHandle, size: int) -> None:
        """Cut the file to `size` bytes."""

    @abstractmethod
    def close(self, handle: FileHandle) -> None:
        """Release the handle; never raises."""

    @abstractmethod
    def read_file(self, path: str) -> bytes:
        """The whole content of a file."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` with `src` (durable only after `fsync_dir`)."""

    @abstractmethod
    def unlink(self, path: str) -> None:
        """Remove a file (durable only after `fsync_dir`); a missing one raises kind `not_found`."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted."""

    @abstractmethod
    def fsync_dir(self, path: str) -> None:
        """Make creations, renames and removals in a directory durable."""

    @abstractmethod
    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """Create a directory and its parents if missing."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a file or directory is there."""

    # --- helpers built on the primitives ---------------------------------------------------
    def write_all(self, handle: FileHandle, data: bytes) -> None:
        """Append all of `data`, looping over short writes; a write that makes no progress is an error."""
        done = 0
        while done < len(data):
            written = self.write(handle, data[done:] if done else data)
            if written <= 0:
                raise StorageError(IO_ERROR, f"cannot write {handle.path}: no progress", path=handle.path)
            done += written

    def remove_quietly(self, path: str) -> None:
        """Unlink if present, ignoring failures: for leftovers whose removal is only tidiness."""
        try:
            self.unlink(path)
        except StorageError:
            pass


def replace_file(fs: FileSystem, path: str, chunks: Iterable[bytes], sync_every: int | None = None) -> None:
    """Durably replace `path` with `chunks`: write a temporary file, fsync it, rename it over `path`, fsync
    the directory. A crash at any point leaves either the old file or the whole new one.

    With `sync_every`, the data is also fdatasync'ed each time that many more bytes were written (RocksDB's
    `bytes_per_sync`, PostgreSQL's `*_flush_after`): on a journalled file system the writer's other files'
    fsyncs (the node's WAL and blocks, before its votes leave) wait for whatever data a commit must write
    first, so a big file synced once makes them all wait for all of it, and synced as it goes, for a piece."""
    tmp = path + TMP_SUFFIX
    fs.remove_quietly(tmp)
    handle = fs.open_append(tmp)
    try:
        unsynced = 0
        for chunk in chunks:
            if sync_every is None:
                fs.write_all(handle, chunk)
                continue
            start = 0
            while start < len(chunk):
                take = min(len(chunk) - start, sync_every - unsynced)
                fs.write_all(handle, chunk[start:start + take])
                start += take
                unsynced += take
                if unsynced == sync_every:
                    fs.fdatasync(handle)
                    unsynced = 0
        fs.fsync(handle)
    except BaseException:
        fs.close(handle)
        fs.remove_quietly(tmp)
        raise
    fs.close(handle)
    try:
        fs.rename(tmp, path)
    except StorageError:
        fs.remove_quietly(tmp)
        raise
    fs.fsync_dir(os.path.dirname(path))


class _OsHandle(FileHandle):
    __slots__ = ("fd",)

    def __init__(self, path: str, fd: int) -> None:
        super().__init__(path)
        self.fd = fd


def _fd(handle: FileHandle) -> int:
    assert isinstance(handle, _OsHandle), handle
    return handle.fd


def _os(action: str, path: str, func: Callable[..., _T], *args: object) -> _T:
    """Call an os function, turning its OSError into a StorageError that names the action and the path."""
    try:
        return func(*args)
    except OSError as exc:
        raise StorageError.from_os_error(exc, action, path) from None


def _read_whole(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OsFileSystem(FileSystem):
    """The operating system's files, with OSError turned into StorageError."""

    def open_append(self, path: str) -> FileHandle:
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        return _OsHandle(path, _os("open", path, os.open, path, flags, 0o600))

    def open_read(self, path: str) -> FileHandle:
        return _OsHandle(path, _os("open", path, os.open, path, os.O_RDONLY | os.O_CLOEXEC))

    def write(self, handle: FileHandle, data: bytes) -> int:
        return _os("write", handle.path, os.write, _fd(handle), data)

    def pread(self, handle: FileHandle, size: int, offset: int) -> bytes:
        return _os("read", handle.path, os.pread, _fd(handle), size, offset)

    def size(self, handle: FileHandle) -> int:
        return _os("stat", handle.path, os.fstat, _fd(handle)).st_size

    def fsync(self, handle: FileHandle) -> None:
        _os("fsync", handle.path, os.fsync, _fd(handle))

    def fdatasync(self, handle: FileHandle) -> None:
        _os("fdatasync", handle.path, os.fdatasync, _fd(handle))

    def truncate(self, handle: FileHandle, size: int) -> None:
        _os("truncate", handle.path, os.ftruncate, _fd(handle), size)

    def close(self, handle: FileHandle) -> None:
        try:
            os.close(_fd(handle))
        except OSError:
            pass

    def read_file(self, path: str) -> bytes:
        return _os("read", path, _read_whole, path)

    def rename(self, src: str, dst: str) -> None:
        _os(f"rename {src} to", dst, os.replace, src, dst)

    def unlink(self, path: str) -> None:
        _os("remove", path, os.unlink, path)

    def listdir(self, path: str) -> list[str]:
        return sorted(_os("list", path, os.listdir, path))

    def fsync_dir(self, path: str) -> None:
        _os("fsync directory", path, _fsync_directory, path)

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        _os("create directory", path, os.makedirs, path, mode, True)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)
