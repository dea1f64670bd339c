"""Snapshots encoded in a forked child, so the node's event loop never pauses for them.

At a snapshot height the node forks: the child sees the state exactly as it was at that height (the kernel
copies a page only when one side writes it), encodes it, and writes its digest and bytes to a pipe; the
parent's event loop goes on, reads the pipe as it fills, and has the digest long before the chain needs it
`snapshot_lag` heights later (`snapshot_maker.py`). A child that has not finished by then is waited for, at
most DIGEST_WAIT (then killed); one that died or hung (killed, out of memory) loses the snapshot, which the
state can no longer give: the chain halts with that reason and a restart rebuilds the state from the stored
blocks. Where fork fails, or before the
node is live (the replay at start-up, which waits for each digest a few blocks later anyway), the snapshot
is encoded at once.

The child runs at a lower scheduling priority (CHILD_NICE): every node forks at the same height, and their
encodings competing with the nodes' own work for the machine made the slowest honest orders of a flood fall
on snapshot heights; the digest is due only `snapshot_lag` heights later, and a child that is late is waited
for, the loop held, so the priority is only somewhat lower: at the lowest a loaded machine starved the child
past its deadline.

Before each fork the garbage collector's objects are frozen (`gc.freeze`, as Python's documentation advises
before a fork): the state a snapshot finds is long-lived, and a full collection would otherwise walk all of
it again and again in the event loop, the longer the bigger the book. Frozen objects are never collected,
so every THAW_EVERY-th snapshot thaws them instead, and the collections until the next snapshot free what
cycles among them became garbage.
"""
from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import select
import signal
import time
import struct
from typing import Callable, NoReturn

from exchange.chain.state.snapshot_maker import DigestBook, InlineSnapshots, Parts, SnapshotLost, snapshot_digest

log = logging.getLogger("exchange.chain")

_HEADER = struct.Struct(">Q32s")        # bytes of the snapshot, its digest
_PIPE_BYTES = 1 << 20                   # asked of the kernel for each pipe (fewer wake-ups); it may give less
_READ_BYTES = 1 << 20
CHILD_NICE = 10         # the encoding child's scheduling niceness: the nodes' own work first, but not starved
DIGEST_WAIT = 60.0      # s the node waits for a late child when the digest is due, before it gives the snapshot up
THAW_EVERY = 8          # snapshots: one in this many thaws the frozen objects instead of freezing more


class _Job:
    __slots__ = ("height", "pid", "fd", "received")

    def __init__(self, height: int, pid: int, fd: int) -> None:
        self.height, self.pid, self.fd = height, pid, fd
        self.received = bytearray()


class ForkedSnapshots:
    def __init__(self, on_ready: Callable[[], None] = lambda: None) -> None:
        self.on_ready = on_ready        # a snapshot's bytes arrived: the store may take them (`take_ready`)
        self.live = False               # until then (the replay at start-up) snapshots are encoded at once
        self._inline = InlineSnapshots()
        self.held = self._inline.held           # a fork, an encoding at once, or a wait for a late child
        self._digests = DigestBook()
        self._jobs: dict[int, _Job] = {}
        self._ready: list[tuple[int, bytes]] = []
        self._lost: dict[int, str] = {}
        self.forked = 0
        self.digest_wait = DIGEST_WAIT
        self._since_thaw = 0

    # ------------------------------------------------------------------ SnapshotMaker
    def start(self, height: int, encode: Parts) -> None:
        loop = running_loop()
        if not self.live or loop is None:
            self._encode_here(height, encode)
            return
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            log.warning("snapshot of height %d encoded in the event loop: no pipe (%s)", height, exc)
            self._encode_here(height, encode)
            return
        started = time.perf_counter()
        self.freeze_long_lived()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            log.warning("snapshot of height %d encoded in the event loop: fork failed (%s)", height, exc)
            self._encode_here(height, encode)
            return
        if pid == 0:        # the child: encode, hand over, and leave without running anything of the parent's
            os.close(read_fd)
            _child(write_fd, encode)
        self.held.add(time.perf_counter() - started, "fork")
        os.close(write_fd)
        try:
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass        # a smaller pipe only means more reads
        os.set_blocking(read_fd, False)
        job = _Job(height, pid, read_fd)
        self._jobs[height] = job
        self.forked += 1
        loop.add_reader(read_fd, self._read, job)

    def known(self, height: int, data: bytes) -> None:
        self._digests.put(height, snapshot_digest(data))

    def digest(self, height: int) -> bytes:
        value = self._digests.get(height)
        if value is not None:
            return value
        job = self._jobs.get(height)
        if job is not None:         # not finished yet: wait for it here, at most DIGEST_WAIT (a hung child)
            log.warning("the snapshot of height %d is due and its encoding is not done: waiting for it, the "
                        "event loop held (at most %g s)", height, self.digest_wait)
            _running_loop_remove_reader(job.fd)
            started = time.perf_counter()
            deadline = time.monotonic() + self.digest_wait
            while self._jobs.get(height) is job:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    try:
                        os.kill(job.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self._finish(job, failed=f"its worker had not finished {self.digest_wait:g} s after it was due")
                    break
                if select.select([job.fd], [], [], remaining)[0]:
                    self._read(job)
            self.held.add(time.perf_counter() - started, "wait")
            value = self._digests.get(height)
            if value is not None:
                return value
        raise SnapshotLost(self._lost.get(height, f"no snapshot of height {height} was taken here"))

    def take_ready(self) -> list[tuple[int, bytes]]:
        ready, self._ready = self._ready, []
        return ready

    def close(self) -> None:
        for job in list(self._jobs.values()):
            _running_loop_remove_reader(job.fd)
            try:
                os.kill(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._finish(job, failed="the node stopped")
        self._ready = []

    # ------------------------------------------------------------------ the parent's side
    def freeze_long_lived(self) -> None:
        """Freeze the collector's objects, or every THAW_EVERY-th time thaw them (see the module's docstring)."""
        self._since_thaw += 1
        if self._since_thaw >= THAW_EVERY:
            self._since_thaw = 0
            gc.unfreeze()
        else:
            gc.freeze()

    def _encode_here(self, height: int, encode: Parts) -> None:
        self._inline.start(height, encode)
        self._digests.put(height, self._inline.digest(height))
        self._ready = self._inline.take_ready()
        self.on_ready()

    def _read(self, job: _Job) -> None:
        try:
            chunk = os.read(job.fd, _READ_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._finish(job, failed=f"reading its worker failed: {exc}")
            return
        if chunk:
            job.received += chunk
            return
        _running_loop_remove_reader(job.fd)
        self._finish(job)

    def _finish(self, job: _Job, failed: str | None = None) -> None:
        self._jobs.pop(job.height, None)
        try:
            os.close(job.fd)
        except OSError:
            pass
        status = _reap(job.pid)
        received = job.received
        if failed is None and len(received) >= _HEADER.size:
            size, value = _HEADER.unpack_from(received)
            if status == 0 and len(received) == _HEADER.size + size:
                data = bytes(memoryview(received)[_HEADER.size:])
                self._digests.put(job.height, value)
                self._ready = [(job.height, data)]      # only the newest waits for the store
                self.on_ready()
                return
        reason = failed or f"its worker process ended with status {status} after {len(received)} bytes"
        self._lost[job.height] = f"the snapshot of height {job.height} was lost: {reason}"
        log.error("%s", self._lost[job.height])


def _child(write_fd: int, encode: Parts) -> NoReturn:
    """Runs in the forked child and never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)        # the parent's event loop owns the one it set
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        gc.disable()                    # nothing here lives long enough to need collecting
        os.nice(CHILD_NICE)             # the nodes' own work first: the digest is due only `snapshot_lag` later
        data = b"".join(encode())
        view = memoryview(_HEADER.pack(len(data), snapshot_digest(data)) + data)
        while view:
            view = view[os.write(write_fd, view):]
        code = 0
    finally:
        os._exit(code)


def _reap(pid: int) -> int:
    """The child's exit status (its pipe closed, so it has ended or is about to)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status)


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _running_loop_remove_reader(fd: int) -> None:
    loop = running_loop()
    if loop is not None:
        loop.remove_reader(fd)
