"""GroupCommit: many coroutines' appends become one write and one fsync, run in a worker thread.

`await commit.submit(items)` returns once the batch holding `items` is durable, with the writer's result for
each item (for a RecordLog, the index each record got). The writer must be all-or-nothing per batch (a
RecordLog append is). When it raises StorageError, every caller of that batch gets it and nothing of the batch
is stored; the next batch simply tries again, so when a full disk gets space back the callers succeed again
with no restart. Submissions cancelled before their batch starts are dropped, never written.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from storage.errors import CLOSED, StorageError

log = logging.getLogger("storage.group_commit")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Submission(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future[list[R]]


class GroupCommit(Generic[T, R]):
    """Batches `submit` calls for `write_batch(items) -> one result per item`, called in a worker thread."""

    def __init__(self, write_batch: Callable[[list[T]], Sequence[R]], *, max_batch_items: int = 4096,
                 name: str = "group-commit") -> None:
        self._write_batch = write_batch
        self.max_batch_items = max_batch_items
        self.name = name
        self._queue: list[_Submission[T, R]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.items_written = 0
        self.failed_batches = 0
        self.last_error: StorageError | None = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue `items` for the next batch and wait until they are durable; raises the batch's StorageError."""
        if self._closing:
            raise StorageError(CLOSED, f"{self.name} is closed")
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run(), name=self.name)
        future: asyncio.Future[list[R]] = loop.create_future()
        self._queue.append(_Submission(items, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    @property
    def queued(self) -> int:
        """Items waiting for the next batch."""
        return sum(len(s.items) for s in self._queue)

    def _take_batch(self) -> list[_Submission[T, R]]:
        batch: list[_Submission[T, R]] = []
        count = 0
        while self._queue:
            submission = self._queue[0]
            if submission.future.done():  # cancelled while queued: never written
                self._queue.pop(0)
                continue
            if batch and count + len(submission.items) > self.max_batch_items:
                break
            batch.append(self._queue.pop(0))
            count += len(submission.items)
        return batch

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            if not batch:
                continue
            items = [item for submission in batch for item in submission.items]
            try:
                results = await asyncio.to_thread(self._write_batch, items)
            except Exception as exc:  # a disk error, or a bad item (validate sizes before submitting)
                self.failed_batches += 1
                if isinstance(exc, StorageError):
                    self.last_error = exc
                    log.error("%s: batch of %d items failed: %s", self.name, len(items), exc)
                else:
                    log.exception("%s: batch of %d items refused", self.name, len(items))
                for submission in batch:
                    if not submission.future.done():
                        submission.future.set_exception(exc)
                continue
            except BaseException as exc:  # a bug or a simulated crash: the waiters get it, the worker stops
                told = False
                for submission in batch + self._queue:
                    if not submission.future.done():
                        submission.future.set_exception(exc)
                        told = True
                self._queue.clear()
                self._closing = True
                if not told:
                    raise
                return
            self.batches += 1
            self.items_written += len(items)
            position = 0
            for submission in batch:
                count = len(submission.items)
                if not submission.future.done():
                    submission.future.set_result(list(results[position:position + count]))
                position += count

    async def close(self) -> None:
        """Write what is queued, then stop the worker. Later submits raise kind `closed`."""
        self._closing = True
        if self._worker is not None:
            assert self._wake is not None
            self._wake.set()
            await asyncio.gather(self._worker, return_exceptions=True)
