"""StorageError: every failure of the storage layer, with a `kind` a caller can act on.

The control API maps kinds to answers instead of a 500: `no_space` is `507 insufficient_storage`; the
transient kinds (`io_error`, `read_only`, `failed`, `locked`) are `503` with `retry_after`; `damaged` and
`missing` mean stored history needs recovery from peers. A message always names the file.
"""
from __future__ import annotations

import errno as errno_codes

NO_SPACE = "no_space"  # ENOSPC / EDQUOT: frees up by itself when space returns
READ_ONLY = "read_only"  # EROFS: the file system was remounted read-only
IO_ERROR = "io_error"  # EIO and anything else the kernel reports
PERMISSION = "permission"  # EACCES / EPERM: fix ownership or mode
NOT_FOUND = "not_found"  # a file the caller expected is absent
DAMAGED = "damaged"  # stored bytes fail their checksum or framing
MISSING = "missing"  # a record the caller asked for is not stored (lost or compacted away)
FAILED = "failed"  # a store refuses writes until reopened: it could not undo a failed write
LOCKED = "locked"  # another process holds DATA_DIR
CLOSED = "closed"  # the store was closed

_KIND_BY_ERRNO = {
    errno_codes.ENOSPC: NO_SPACE, errno_codes.EDQUOT: NO_SPACE, errno_codes.EROFS: READ_ONLY,
    errno_codes.EACCES: PERMISSION, errno_codes.EPERM: PERMISSION, errno_codes.ENOENT: NOT_FOUND,
}
# Seconds a client should wait before retrying, per kind; None means retrying will not help by itself.
_RETRY_AFTER = {NO_SPACE: 30.0, READ_ONLY: 60.0, IO_ERROR: 5.0, FAILED: 60.0, LOCKED: 5.0}


class StorageError(Exception):
    """A storage failure. `kind` is one of the module constants; `errno` is set when the kernel reported one;
    `outcome_unknown` is true when the write may or may not be on disk (it could not be undone)."""

    def __init__(self, kind: str, message: str, *, errno: int | None = None, path: str | None = None,
                 outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.errno = errno
        self.path = path
        self.outcome_unknown = outcome_unknown

    @property
    def retry_after(self) -> float | None:
        """A Retry-After hint in seconds, or None when the condition needs an operator."""
        return _RETRY_AFTER.get(self.kind)

    @classmethod
    def from_os_error(cls, exc: OSError, action: str, path: str) -> StorageError:
        """Wrap a kernel error: 'cannot fsync /d/x.seg: No space left on device'."""
        code = exc.errno
        kind = _KIND_BY_ERRNO.get(code, IO_ERROR) if code is not None else IO_ERROR
        reason = exc.strerror or str(exc)
        return cls(kind, f"cannot {action} {path}: {reason}", errno=code, path=path)

    def __repr__(self) -> str:
        return f"StorageError(kind={self.kind!r}, {str(self)!r}, errno={self.errno!r})"


def from_errno(code: int, action: str, path: str) -> StorageError:
    """The StorageError a kernel would cause with `code` (used by fault injection)."""
    import os

    return StorageError.from_os_error(OSError(code, os.strerror(code)), action, path)
