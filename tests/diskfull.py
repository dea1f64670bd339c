"""A small real file system for disk-full tests: a tmpfs mounted on a temporary directory (we are root).

    from tests.diskfull import small_disk            # the fixture: a 2 MiB disk, unmounted at teardown
    def test_x(small_disk): ...  small_disk.path ... small_disk.fill() ... small_disk.free()

`mounted_small_disk(path, size)` does the same for other sizes. Where mounting is impossible (not root, no
`mount`, a container without CAP_SYS_ADMIN) the test is skipped and the reason says which.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

FILLER = ".filler"


class SmallDisk:
    """A mounted tmpfs of `size` bytes. `fill` takes (almost) all of its free space; `free` gives it back."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def free_bytes(self) -> int:
        info = os.statvfs(self.path)
        return info.f_bavail * info.f_frsize

    def fill(self, leave: int = 0) -> int:
        """Write a filler file until the disk is full, then give back `leave` bytes (tmpfs counts whole pages).
        Returns the filler's size."""
        filler_path = self.path / FILLER
        fd = os.open(filler_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (bytes(65536), bytes(4096), bytes(1)):
                try:
                    while os.write(fd, chunk):
                        pass
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
            size = os.fstat(fd).st_size
            if leave:
                size = max(0, size - leave)
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return size

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)


@contextlib.contextmanager
def mounted_small_disk(path: Path, size: int = 2 * 1024 * 1024) -> Iterator[SmallDisk]:
    """Mount a tmpfs of `size` bytes on `path` (created), yield it, unmount it (lazily if still busy)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a disk-full test needs root")
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no `mount` command to make a small tmpfs for a disk-full test")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {path} for a disk-full test: {done.stderr.strip()}")
    try:
        yield SmallDisk(path, size)
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 2 MiB tmpfs on a fresh directory, unmounted at teardown."""
    with mounted_small_disk(tmp_path / f"small-disk-{os.getpid()}") as disk:
        yield disk
