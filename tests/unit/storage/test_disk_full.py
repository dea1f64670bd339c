"""A real full disk (a 2 MiB tmpfs, real ENOSPC from the kernel): every caller of a failed batch hears
`no_space`, nothing half-written stays, and once space is back the same open log carries on."""
from __future__ import annotations

import asyncio
import os

import pytest

from storage.atomic import AtomicDocument
from storage.errors import NO_SPACE, StorageError
from storage.group_commit import GroupCommit
from storage.recordlog import RecordLog
from storage.snapshots import SnapshotStore
from tests.diskfull import SmallDisk, small_disk  # noqa: F401  (the fixture)

pytestmark = pytest.mark.process     # mount and umount a tmpfs


def disk_bytes(directory) -> int:
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))


async def test_a_full_disk_fails_whole_batches_and_writes_resume_when_space_returns(small_disk: SmallDisk):
    log_dir = small_disk.path / "log"
    log = RecordLog.open(log_dir, segment_bytes=256 * 1024)
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)
    acked = {}
    for n in range(50):
        (index,) = await commit.submit([f"order-{n}".encode() * 20])
        acked[index] = f"order-{n}".encode() * 20
    before = disk_bytes(log_dir)
    small_disk.fill(leave=8192)  # room for part of a batch: a short write, then ENOSPC
    for _attempt in range(3):
        outcomes = await asyncio.gather(*(commit.submit([b"x" * 3000]) for _ in range(20)),
                                        return_exceptions=True)
        assert all(isinstance(o, StorageError) and o.kind == NO_SPACE for o in outcomes), outcomes
    assert disk_bytes(log_dir) == before, "a failed batch left bytes behind"
    assert log.next_index == 51
    small_disk.free()
    results = await asyncio.gather(*(commit.submit([f"later-{n}".encode()]) for n in range(20)))
    for n, (index,) in enumerate(results):
        acked[index] = f"later-{n}".encode()
    await commit.close()
    log.close()
    again = RecordLog.open(log_dir, segment_bytes=256 * 1024)
    assert again.report.clean and dict(again.iterate()) == acked


def test_snapshots_and_documents_on_a_full_disk_keep_the_old_value_and_leave_no_temporary(small_disk: SmallDisk):
    snapshots = SnapshotStore(small_disk.path / "snaps")
    snapshots.save(1, b"state" * 100)
    document = AtomicDocument(small_disk.path / "docs", "vote")
    document.store(b"h=1")
    small_disk.fill()
    with pytest.raises(StorageError) as caught:
        snapshots.save(2, b"state" * 100_000)
    assert caught.value.kind == NO_SPACE
    with pytest.raises(StorageError) as caught:
        document.store(b"h=2" * 2000)
    assert caught.value.kind == NO_SPACE
    assert sorted(os.listdir(small_disk.path / "snaps")) == [f"snapshot-{1:020d}.snap"]
    newest, kept = snapshots.load_newest(), document.load()
    assert newest is not None and kept is not None
    assert newest.height == 1 and kept.value == b"h=1"
    assert [n for n in os.listdir(small_disk.path / "docs") if n.endswith(".tmp")] == []
    small_disk.free()
    snapshots.save(2, b"state" * 100_000)
    newest = snapshots.load_newest()
    assert newest is not None and newest.height == 2
