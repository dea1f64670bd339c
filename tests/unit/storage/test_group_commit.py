"""GroupCommit: one write and one sync for many waiting coroutines; a failed batch fails all of its callers,
leaves nothing on disk, and the next batch tries again (space coming back is enough, no restart)."""
from __future__ import annotations

import asyncio
import errno
import threading

import pytest

from storage.errors import CLOSED, IO_ERROR, NO_SPACE, StorageError
from tests.faultyfs import FaultyFS
from storage.group_commit import GroupCommit
from storage.recordlog import RecordLog


def open_log(fs: FaultyFS) -> RecordLog:
    return RecordLog.open("/data/log", fs=fs)


async def test_many_coroutines_share_batches_and_each_gets_its_own_indexes():
    fs = FaultyFS()
    log = open_log(fs)
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)
    results = await asyncio.gather(*(commit.submit([f"r{n}".encode(), f"s{n}".encode()]) for n in range(200)))
    assert sorted(i for pair in results for i in pair) == list(range(1, 401))
    assert all(log.get(a) == f"r{n}".encode() and log.get(b) == f"s{n}".encode()
               for n, (a, b) in enumerate(results))
    assert commit.batches < 20 and fs.calls["fdatasync"] == commit.batches
    await commit.close()


async def test_a_failed_batch_fails_every_caller_leaves_nothing_and_the_next_batch_succeeds():
    fs = FaultyFS()
    log = open_log(fs)
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)
    await commit.submit([b"first"])
    fs.fail("fdatasync", errno.EIO)
    outcomes = await asyncio.gather(*(commit.submit([f"doomed{n}".encode()]) for n in range(5)),
                                    return_exceptions=True)
    assert all(isinstance(o, StorageError) and o.kind == IO_ERROR for o in outcomes)
    assert log.next_index == 2 and commit.failed_batches == 1
    assert await commit.submit([b"second"]) == [2]
    await commit.close()
    log.close()
    assert [body for _, body in open_log(fs).iterate()] == [b"first", b"second"]


async def test_a_full_disk_answers_no_space_until_space_returns_then_writes_resume_by_themselves():
    fs = FaultyFS()
    log = open_log(fs)
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)
    await commit.submit([b"before"])
    fs.set_capacity(fs.used_bytes() + 20)
    for _attempt in range(5):
        with pytest.raises(StorageError) as caught:
            await commit.submit([b"x" * 100])
        assert caught.value.kind == NO_SPACE and caught.value.retry_after
    assert fs.capacity is not None
    assert fs.used_bytes() <= fs.capacity  # nothing half-written stays behind
    fs.set_capacity(None)
    assert await commit.submit([b"after"]) == [2]
    await commit.close()
    log.close()
    reopened = open_log(fs)
    assert reopened.report.clean and [b for _, b in reopened.iterate()] == [b"before", b"after"]


async def test_a_submission_cancelled_before_its_batch_starts_is_never_written():
    started, release = threading.Event(), threading.Event()
    written: list[list[bytes]] = []

    def slow_writer(items: list[bytes]) -> list[int]:
        started.set()
        assert release.wait(10)
        written.append(items)
        return list(range(len(items)))

    commit: GroupCommit[bytes, int] = GroupCommit(slow_writer)
    first = asyncio.ensure_future(commit.submit([b"a"]))
    await asyncio.to_thread(started.wait, 10)  # the worker has taken [a] and is blocked in its thread
    second = asyncio.ensure_future(commit.submit([b"b"]))
    third = asyncio.ensure_future(commit.submit([b"c"]))
    while commit.queued < 2:
        await asyncio.sleep(0)  # let the two submit coroutines queue their items
    second.cancel()
    release.set()
    assert await first == [0] and await third == [0]
    await commit.close()
    assert written == [[b"a"], [b"c"]] and second.cancelled()


async def test_the_write_runs_off_the_event_loop():
    started, release = threading.Event(), threading.Event()

    def blocking_writer(items: list[int]) -> list[int]:
        started.set()
        assert release.wait(10), "the event loop never got to release the writer"
        return items

    commit: GroupCommit[int, int] = GroupCommit(blocking_writer)
    pending = asyncio.ensure_future(commit.submit([7]))
    await asyncio.to_thread(started.wait, 10)
    release.set()  # this coroutine runs while the writer blocks: the loop is free
    assert await pending == [7]
    await commit.close()


async def test_batches_are_capped_and_close_drains_then_refuses():
    sizes: list[int] = []

    def writer(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    commit: GroupCommit[int, int] = GroupCommit(writer, max_batch_items=10)
    results = await asyncio.gather(*(commit.submit([n, n]) for n in range(30)))
    assert results == [[n, n] for n in range(30)] and max(sizes) <= 10 and sum(sizes) == 60
    await commit.close()
    with pytest.raises(StorageError) as caught:
        await commit.submit([1])
    assert caught.value.kind == CLOSED


async def test_a_batch_the_writer_refuses_fails_its_callers_only():
    log = RecordLog.open("/data/log", fs=FaultyFS())
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)
    with pytest.raises(ValueError):
        await commit.submit([b"x" * (64 * 1024 * 1024 + 1)])  # over the record size limit
    assert await commit.submit([b"fine"]) == [1]
    await commit.close()
