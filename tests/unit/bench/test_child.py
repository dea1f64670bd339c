"""bench/child.py: a benchmark's child process that fails is reported with its own stderr (its
traceback, its exit code), at once, never as a bare timeout of the queue its parent waits on."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time

import pytest

from bench.child import Child, ChildFailed, get, wait_event

pytestmark = pytest.mark.process     # benchmark children (spawn and fork)


def _fails_on_import_of_a_moved_name(port_q) -> None:
    from bench.table import NoSuchThing  # type: ignore[attr-defined]  # noqa: F401


def _says_then_exits(port_q, text: str) -> None:
    print(text, file=sys.stderr)
    os.kill(os.getpid(), signal.SIGKILL)


def _answers(port_q, value) -> None:
    port_q.put(value)


def _sets_then_waits(event, stop_q) -> None:
    event.set()
    stop_q.get()


def _waits(port_q, stop_q) -> None:
    print("listening, never answering", file=sys.stderr, flush=True)
    stop_q.get()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_child_that_raises_is_reported_with_its_traceback_at_once(method: str) -> None:
    ctx = mp.get_context(method)
    port_q = ctx.Queue()
    child = Child(ctx, _fails_on_import_of_a_moved_name, port_q)
    started = time.monotonic()
    try:
        with pytest.raises(ChildFailed) as failed:
            get(port_q, [child], 60, "the server's port")
    finally:
        child.stop()
    assert time.monotonic() - started < 30               # not the 60 s timeout
    message = str(failed.value)
    assert "waiting for the server's port" in message and "exited with code 1" in message
    assert "ImportError" in message and "NoSuchThing" in message and "bench/table.py" in message, message


def test_a_child_killed_by_a_signal_reports_its_exit_code_and_what_it_wrote() -> None:
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    child = Child(ctx, _says_then_exits, port_q, "out of descriptors, giving up")
    try:
        with pytest.raises(ChildFailed) as failed:
            get(port_q, [child], 60)
    finally:
        child.stop()
    assert f"exited with code -{signal.SIGKILL.value}" in str(failed.value)
    assert "out of descriptors, giving up" in str(failed.value)


def test_a_silent_child_times_out_naming_itself_and_its_stderr() -> None:
    ctx = mp.get_context("spawn")
    port_q, stop_q = ctx.Queue(), ctx.Queue()
    child = Child(ctx, _waits, port_q, stop_q, name="listener")
    try:
        with pytest.raises(ChildFailed) as failed:
            get(port_q, [child], 3, "the listener's port")
    finally:
        stop_q.put("stop")
        child.stop()
    message = str(failed.value)
    assert "waited 3 s for the listener's port in vain" in message
    assert "listener" in message and "still running" in message and "never answering" in message


def test_answers_and_events_pass_through_and_this_process_keeps_its_stderr(capfd) -> None:
    ctx = mp.get_context("spawn")
    port_q, stop_q = ctx.Queue(), ctx.Queue()
    answering = Child(ctx, _answers, port_q, (4242, "node-id"))
    event = ctx.Event()
    setting = Child(ctx, _sets_then_waits, event, stop_q)
    try:
        assert get(port_q, [answering], 60) == (4242, "node-id")   # it may exit right after sending
        wait_event(event, [setting], 60)
        print("parent's own stderr", file=sys.stderr)
    finally:
        stop_q.put("stop")
        setting.stop()
        answering.stop()
    assert "parent's own stderr" in capfd.readouterr().err
    assert not os.path.exists(answering.stderr_path)       # stop() drops the file
