"""FaultyFS behaves like a disk: injected failures, a capacity, and crash images that keep exactly what a real
crash could keep (synced data always; unsynced data lost, kept or torn; unsynced renames maybe)."""
from __future__ import annotations

import errno

import pytest

from storage.errors import IO_ERROR, NO_SPACE, NOT_FOUND, READ_ONLY, StorageError
from tests.faultyfs import SECTOR, Crash, FaultyFS
from storage.fs import OsFileSystem, replace_file


def written(fs: FaultyFS, path: str, *chunks: bytes, sync: bool = True) -> None:
    handle = fs.open_append(path)
    for chunk in chunks:
        fs.write_all(handle, chunk)
    if sync:
        fs.fsync(handle)
    fs.close(handle)


def test_the_nth_call_of_a_kind_fails_with_the_errno_asked_for():
    fs = FaultyFS()
    fs.makedirs("/d")
    fs.fail("fsync", errno.EROFS, after=1)
    handle = fs.open_append("/d/f")
    fs.write_all(handle, b"abc")
    fs.fsync(handle)  # the first passes
    with pytest.raises(StorageError) as caught:
        fs.fsync(handle)
    assert caught.value.kind == READ_ONLY and caught.value.errno == errno.EROFS and "/d/f" in str(caught.value)
    fs.fsync(handle)  # only once
    fs.fail("rename", errno.EIO, times=-1)
    for _ in range(3):
        with pytest.raises(StorageError) as caught:
            fs.rename("/d/f", "/d/g")
        assert caught.value.kind == IO_ERROR
    fs.clear_faults()
    fs.rename("/d/f", "/d/g")
    assert fs.files() == {"/d/g": b"abc"}


def test_a_short_write_returns_less_and_write_all_finishes_the_job():
    fs = FaultyFS()
    fs.makedirs("/d")
    fs.short_write(3)
    handle = fs.open_append("/d/f")
    assert fs.write(handle, b"abcdef") == 3
    fs.short_write(2)
    fs.write_all(handle, b"ghijkl")
    assert fs.files()["/d/f"] == b"abcghijkl" and fs.calls["write"] == 3


def test_a_full_disk_gives_a_short_write_then_enospc_and_space_comes_back():
    fs = FaultyFS()
    fs.makedirs("/d")
    fs.set_capacity(10)
    handle = fs.open_append("/d/f")
    assert fs.write(handle, b"x" * 8) == 8
    assert fs.write(handle, b"y" * 8) == 2
    with pytest.raises(StorageError) as caught:
        fs.write(handle, b"z")
    assert caught.value.kind == NO_SPACE and caught.value.errno == errno.ENOSPC
    fs.truncate(handle, 4)  # freeing space makes room again
    assert fs.write(handle, b"z") == 1
    fs.set_capacity(None)
    fs.write_all(handle, b"w" * 100)
    assert fs.used_bytes() == 105


def test_crash_at_a_point_stops_every_later_call():
    fs = FaultyFS()
    fs.makedirs("/d")
    fs.crash_at(2)
    handle = fs.open_append("/d/f")  # point 0: create
    fs.write_all(handle, b"abc")  # point 1
    with pytest.raises(Crash):
        fs.fsync(handle)  # point 2
    with pytest.raises(Crash):
        fs.read_file("/d/f")
    fs.close(handle)  # closing never raises


def test_synced_data_always_survives_and_unsynced_data_is_lost_kept_or_torn():
    outcomes = set()
    for seed in range(200):
        fs = FaultyFS()
        fs.makedirs("/d")
        written(fs, "/d/f", b"A" * 1000)
        fs.fsync_dir("/d")
        written(fs, "/d/f", b"B" * 2000, sync=False)
        after = fs.after_crash(seed).files()["/d/f"]
        assert after[:1000] == b"A" * 1000
        tail = after[1000:]
        assert len(tail) <= 2000
        if tail == b"":
            outcomes.add("lost")
        elif tail == b"B" * 2000:
            outcomes.add("kept")
        elif tail == b"B" * len(tail):
            outcomes.add("cut")
        else:  # zero-filled from a sector boundary: the size grew, the data never came
            zero_from = tail.index(0)
            assert (1000 + zero_from) % SECTOR == 0 and tail[zero_from:] == bytes(len(tail) - zero_from)
            assert tail[:zero_from] == b"B" * zero_from and len(tail) == 2000
            outcomes.add("zero_tail")
    assert outcomes == {"lost", "kept", "cut", "zero_tail"}
    fs = FaultyFS()
    fs.makedirs("/d")
    written(fs, "/d/f", b"A" * 10)
    fs.fsync_dir("/d")
    written(fs, "/d/f", b"B" * 10, sync=False)
    assert fs.after_crash(mode="lose").files()["/d/f"] == b"A" * 10
    assert fs.after_crash(mode="keep").files()["/d/f"] == b"A" * 10 + b"B" * 10


def test_hostile_images_leave_unwritten_sectors_in_the_middle_of_unsynced_data():
    holes = 0
    for seed in range(50):
        fs = FaultyFS()
        fs.makedirs("/d")
        written(fs, "/d/f", b"A" * SECTOR)
        fs.fsync_dir("/d")
        written(fs, "/d/f", b"B" * SECTOR * 8, sync=False)
        after = fs.after_crash(seed, hostile=True).files()["/d/f"]
        assert after[:SECTOR] == b"A" * SECTOR
        sectors = [after[i:i + SECTOR] for i in range(SECTOR, len(after), SECTOR)]
        holes += any(s == bytes(SECTOR) for s in sectors[:-1]) and sectors[-1] == b"B" * SECTOR
    assert holes > 0


def test_an_unsynced_rename_may_or_may_not_survive_but_a_synced_one_does():
    seen = set()
    for seed in range(40):
        fs = FaultyFS()
        fs.makedirs("/d")
        written(fs, "/d/old", b"1")
        fs.fsync_dir("/d")
        written(fs, "/d/new.tmp", b"2")
        fs.rename("/d/new.tmp", "/d/old")
        seen.add(fs.after_crash(seed).files().get("/d/old"))
        fs.fsync_dir("/d")
        assert fs.after_crash(seed).files() == {"/d/old": b"2"}
    assert seen == {b"1", b"2"}


def test_an_unlinked_file_stays_readable_through_an_open_handle():
    fs = FaultyFS()
    fs.makedirs("/d")
    written(fs, "/d/f", b"hello")
    handle = fs.open_read("/d/f")
    fs.unlink("/d/f")
    assert fs.pread(handle, 5, 0) == b"hello" and not fs.exists("/d/f")
    with pytest.raises(StorageError) as caught:
        fs.open_read("/d/f")
    assert caught.value.kind == NOT_FOUND


@pytest.mark.parametrize("make", [FaultyFS, OsFileSystem])
def test_replace_file_on_both_file_systems(tmp_path, make):
    fs = make()
    directory = str(tmp_path) if make is OsFileSystem else "/d"
    fs.makedirs(directory)
    path = f"{directory}/doc"
    replace_file(fs, path, [b"one"])
    replace_file(fs, path, [b"two", b"!"])
    assert fs.read_file(path) == b"two!" and fs.listdir(directory) == ["doc"]


def test_replace_file_that_fails_leaves_the_old_file_and_no_temporary():
    fs = FaultyFS()
    fs.makedirs("/d")
    replace_file(fs, "/d/doc", [b"old"])
    fs.fail("fsync", errno.EIO)
    with pytest.raises(StorageError):
        replace_file(fs, "/d/doc", [b"new"])
    assert fs.files() == {"/d/doc": b"old"}


def test_os_file_system_reports_kernel_errors_as_storage_errors(tmp_path):
    fs = OsFileSystem()
    with pytest.raises(StorageError) as caught:
        fs.read_file(str(tmp_path / "absent"))
    assert caught.value.kind == NOT_FOUND and str(tmp_path / "absent") in str(caught.value)
    handle = fs.open_append(str(tmp_path / "f"))
    fs.write_all(handle, b"abcdef")
    fs.fdatasync(handle)
    fs.truncate(handle, 3)
    fs.write_all(handle, b"Z")  # appends at the new end
    assert fs.pread(handle, 10, 0) == b"abcZ" and fs.size(handle) == 4
    fs.close(handle)
