"""Child processes of the benchmarks that report their own failure.

A `Child` (a `multiprocessing` process, fork or spawn) writes its stderr to a file; `get` and
`wait_event` wait for what a child sends while watching the children it depends on. A child that
exits before sending, or a wait that times out, raises `ChildFailed` carrying each child's exit
code and the end of its stderr (its traceback), never a bare `queue.Empty`."""
from __future__ import annotations

import contextlib
import os
import queue
import sys
import tempfile
import threading
import time
from multiprocessing.context import BaseContext
from typing import Any, Callable, Iterator, Sequence

STEP = 0.25      # how long one wait on the queue or event lasts before the children are checked again
GRACE = 1.0      # after a child exits: how long what it sent just before exiting may take to arrive
TAIL = 4000      # characters of a failed child's stderr in the error
_START_LOCK = threading.Lock()   # one child at a time borrows fd 2


class ChildFailed(RuntimeError):
    """A benchmark's child process exited or stayed silent instead of answering."""


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """While starting a child: fd 2 of this process is `path`, so the child inherits it from its very
    first instruction (an error unpickling its target, an import error, C-level messages are kept too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _child_main(target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """In the child: a forked child inherits this process's `sys.stderr` object, which may not write to fd 2
    (pytest's capture replaces it), so it is pointed at fd 2 again before `target(*args)`."""
    sys.stderr = open(2, "w", buffering=1, closefd=False)   # fd 2 outlives this call
    target(*args)


class Child:
    """`target(*args)` in a daemon process of `ctx`, its stderr kept for `ChildFailed`."""

    def __init__(self, ctx: BaseContext, target: Callable[..., Any], *args: Any, name: str = "") -> None:
        self.name = name or getattr(target, "__name__", "child").lstrip("_")
        fd, self.stderr_path = tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".stderr")
        os.close(fd)
        self.proc = ctx.Process(target=_child_main, args=(target, args), daemon=True)  # type: ignore[attr-defined]
        with _START_LOCK, _stderr_to(self.stderr_path):
            self.proc.start()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return int(self.proc.pid)

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return text if len(text) <= TAIL else "..." + text[-TAIL:]

    def describe(self) -> str:
        code = self.proc.exitcode
        state = "still running" if code is None else f"exited with code {code}"
        err = self.stderr().strip()
        return f"{self.name} (pid {self.proc.pid}) {state}" + (f"; its stderr:\n{err}" if err else "; no stderr")

    def stop(self, timeout: float = 10.0, terminate: bool = False) -> None:
        """Wait for the child to end (SIGTERM first with `terminate`), kill it after `timeout`; drop its stderr."""
        if terminate and self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


def _until(step: Callable[[float], tuple[bool, Any]], children: Sequence[Child], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        done, value = step(STEP)
        if done:
            return value
        exited = [c for c in children if not c.proc.is_alive()]
        if exited:
            done, value = step(GRACE)   # it may have sent just before exiting
            if done:
                return value
            raise ChildFailed(f"waiting for {what}: " + "\n".join(c.describe() for c in exited))
        if time.monotonic() >= deadline:
            raise ChildFailed(f"waited {timeout:g} s for {what} in vain: " + "\n".join(c.describe() for c in children))


def get(q: Any, children: Sequence[Child], timeout: float, what: str = "an answer") -> Any:
    """The next item of multiprocessing queue `q`, while every one of `children` stays alive."""
    def step(wait: float) -> tuple[bool, Any]:
        try:
            return True, q.get(timeout=wait)
        except queue.Empty:
            return False, None
    return _until(step, children, timeout, what)


def wait_event(event: Any, children: Sequence[Child], timeout: float, what: str = "the children") -> None:
    """Until multiprocessing event `event` is set, while every one of `children` stays alive."""
    _until(lambda wait: (event.wait(wait), None), children, timeout, what)
