"""Readiness checks and sd_notify against a datagram socket the test binds."""
from __future__ import annotations

import os
import socket

import pytest

from node.health import ReadinessChecks
from node.sdnotify import SystemdNotifier


def test_readiness_lists_every_check_and_a_raising_one_fails():
    checks = ReadinessChecks()
    checks.register("api", lambda: True)
    checks.register("quorum", lambda: (False, "2 of 4 validators"))
    checks.register("caught_up", lambda: 1 / 0)  # type: ignore[arg-type, return-value]  # deliberately a check that raises
    ready, results = checks.evaluate()
    assert not ready
    assert results == [{"name": "api", "ok": True, "detail": ""},
                       {"name": "quorum", "ok": False, "detail": "2 of 4 validators"},
                       {"name": "caught_up", "ok": False, "detail": "check failed: ZeroDivisionError: division by zero"}]
    checks.unregister("quorum")
    checks.register("caught_up", lambda: (True, "height 10"))
    assert checks.evaluate()[0] and checks.names == ["api", "caught_up"]


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    else:
        name = f"@exchange-node-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name[1:])
    sock.settimeout(5)
    yield name, sock
    sock.close()


async def test_notifications_reach_the_socket(listener):
    name, sock = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert notifier.enabled and notifier.watchdog_interval is None
    assert notifier.ready("node abc up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=node abc up"
    assert notifier.status("two\nlines")
    assert sock.recv(4096) == b"STATUS=two lines"
    await notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


async def test_without_notify_socket_nothing_is_sent_and_a_dead_socket_is_not_fatal(tmp_path):
    assert not SystemdNotifier({}).notify(READY=1)
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not gone.notify(READY=1) and not gone.notify(STATUS="x")


@pytest.mark.parametrize("env, interval", [({"WATCHDOG_USEC": "2000000"}, 2.0), ({"WATCHDOG_USEC": "0"}, None),
                                           ({"WATCHDOG_USEC": "abc"}, None),
                                           ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),
                                           ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 1.0)])
def test_watchdog_interval_is_only_for_this_process(env, interval):
    assert SystemdNotifier({"NOTIFY_SOCKET": "/x", **env}).watchdog_interval == interval


async def test_the_loop_monitor_counts_full_collections_and_forgets_them_after_its_window():
    import gc

    from node.health import LAG_WINDOW, LoopMonitor

    now = [100.0]
    monitor = LoopMonitor(clock=lambda: now[0])
    monitor.start()
    try:
        gc.collect(1)                   # a young collection is not a pause worth showing
        assert monitor.lag()["full_gc_10s"] == 0
        gc.collect()
        seen = monitor.lag()
        assert seen["full_gc_10s"] == 1 and seen["full_gc_max_10s_seconds"] is not None
        now[0] += LAG_WINDOW + 1
        assert monitor.lag()["full_gc_10s"] == 0
    finally:
        await monitor.stop()
    gc.collect()
    assert len(monitor.gc_pauses) == 1, "a stopped monitor no longer listens"
