"""DataDirLock: one process per DATA_DIR, and a DATA_DIR only its owner can read.

Two nodes on one directory share an identity and a log and destroy both, so `acquire` takes an exclusive
`flock` on `DATA_DIR/.lock` before anything else touches the directory, and writes the holder's PID into it
so the second process can say who holds it. The kernel drops the lock when the holder exits, even by
`kill -9`, so a stale file never blocks a restart. The directory is created 0700, or tightened to 0700 with
an INFO line if it exists looser: it holds the node's private key and its history.
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path
from types import TracebackType

from storage.errors import LOCKED, StorageError

log = logging.getLogger("storage.lock")

LOCK_FILE = ".lock"
PRIVATE_MODE = 0o700


class DataDirInUse(StorageError):
    """Another live process holds the directory."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "a process whose pid is not recorded yet"
        super().__init__(LOCKED, f"data directory {directory} is in use by another exchange-node ({holder}); "
                         f"stop that node first, or give this one another --data-dir", path=str(directory))
        self.directory = directory
        self.pid = pid


def ensure_private_dir(directory: Path) -> None:
    """Create `directory` 0700, or tighten an existing one to 0700 (saying so)."""
    try:
        directory.mkdir(mode=PRIVATE_MODE, parents=True, exist_ok=True)
        mode = stat.S_IMODE(directory.stat().st_mode)
    except OSError as exc:
        raise StorageError.from_os_error(exc, "create data directory", str(directory)) from None
    if mode & 0o077:
        try:
            os.chmod(directory, PRIVATE_MODE)
        except OSError as exc:
            log.warning("data directory %s has mode %04o and cannot be tightened to 0700: %s",
                        directory, mode, exc.strerror)
            return
        log.info("data directory %s had mode %04o; tightened to 0700 (it holds the node key and its history)",
                 directory, mode)


class DataDirLock:
    """An exclusive lock on a data directory for the life of this process (or until `release`)."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str | os.PathLike[str]) -> DataDirLock:
        """Make the directory private and lock it; raises DataDirInUse naming the holder's PID."""
        directory = Path(directory).expanduser().absolute()
        ensure_private_dir(directory)
        path = directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StorageError.from_os_error(exc, "open lock file", str(path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirInUse(directory, pid) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError.from_os_error(exc, "lock", str(path)) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # the lock holds without the PID; only the message to a second process suffers
            log.warning("cannot record the pid in %s: %s", path, exc.strerror)
        return cls(directory, fd)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
