"""ReopeningLog: a RecordLog that reopens itself after a write it could not undo.

A RecordLog whose failed append could not be truncated away refuses every later write (kind `failed`):
after a crash those bytes might come back, and only a fresh open can judge them (cut as a torn tail, or
kept whole). Reopening at once, rather than at the next restart, lets a node ride out a bad moment of its
disk without one; a reopen that fails itself is tried again before the next write.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from storage import RecordLog, StorageError
from storage.errors import FAILED

log = logging.getLogger("exchange.chain.store.block_store")

T = TypeVar("T")


class ReopeningLog:
    def __init__(self, name: str, opener: Callable[[], RecordLog]) -> None:
        self.name = name
        self._opener = opener
        self.log = opener()
        self.reopened = 0
        self._broken = False
        self._earlier_syncs = 0     # those of the logs this one replaced

    @property
    def syncs(self) -> int:
        """fdatasyncs of appends over this log's life, reopens included."""
        return self._earlier_syncs + self.log.syncs

    def write(self, action: Callable[[RecordLog], T]) -> T:
        """Run a write on the log; on an error whose outcome is unknown, reopen it, then raise."""
        if self._broken:
            self._reopen()
        try:
            return action(self.log)
        except StorageError as exc:
            if exc.kind == FAILED or exc.outcome_unknown:
                self._reopen()
            raise

    def _reopen(self) -> None:
        self.log.close()
        self._earlier_syncs += self.log.syncs
        try:
            self.log = self._opener()
        except StorageError as exc:      # the closed log stays: writes fail until a later reopen works
            log.error("cannot reopen the %s log after a failed write: %s", self.name, exc)
            self._broken = True
            return
        self._broken = False
        self.reopened += 1
        log.warning("reopened the %s log after a write whose outcome was unknown: %s", self.name,
                    self.log.report.summary())

    def close(self) -> None:
        try:
            self.log.close()
        except StorageError:
            pass
