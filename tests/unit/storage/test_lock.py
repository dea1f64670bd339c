"""DataDirLock: one holder per directory, named by PID; released by exit, even kill -9; the directory 0700."""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

import pytest

from storage.errors import LOCKED, StorageError
from storage.lock import LOCK_FILE, DataDirInUse, DataDirLock

HOLDER = """
import sys
from storage.lock import DataDirLock
lock = DataDirLock.acquire(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_holder_is_refused_with_the_directory_and_the_pid(tmp_path):
    with DataDirLock.acquire(tmp_path / "data"):
        with pytest.raises(DataDirInUse) as caught:
            DataDirLock.acquire(tmp_path / "data")
        error = caught.value
        assert error.kind == LOCKED and error.pid == os.getpid()
        assert str(tmp_path / "data") in str(error) and f"pid {os.getpid()}" in str(error)
    DataDirLock.acquire(tmp_path / "data").release()  # released: free again


def test_a_new_directory_is_private_and_a_loose_one_is_tightened_with_an_info_line(tmp_path, caplog):
    DataDirLock.acquire(tmp_path / "fresh" / "data").release()
    assert stat.S_IMODE((tmp_path / "fresh" / "data").stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="storage.lock"):
        DataDirLock.acquire(loose).release()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    assert "0755" in caplog.text and "0700" in caplog.text and str(loose) in caplog.text


@pytest.mark.process     # a Python child holds the lock
def test_the_lock_of_a_killed_process_is_gone_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirInUse) as caught:
            DataDirLock.acquire(tmp_path)
        assert caught.value.pid == holder.pid
        holder.kill()
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    assert (tmp_path / LOCK_FILE).exists(), "the stale file stays; only the kernel's lock mattered"
    DataDirLock.acquire(tmp_path).release()


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / LOCK_FILE).symlink_to(victim)
    with pytest.raises(StorageError):
        DataDirLock.acquire(data)
    assert victim.read_text() == "precious"


def test_a_file_where_the_directory_should_be_is_a_clear_error(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(StorageError) as caught:
        DataDirLock.acquire(tmp_path / "data")
    assert str(tmp_path / "data") in str(caught.value)
