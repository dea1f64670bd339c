"""systemd readiness and watchdog notifications (the sd_notify protocol), with no extra package.

With `Type=notify` systemd starts the node with `$NOTIFY_SOCKET` naming a unix datagram socket
(a leading "@" means Linux's abstract namespace); each notification is one datagram of
newline-separated `KEY=VALUE` lines. The node sends `READY=1` once its control API answers and
every part has started, `STATUS=...` with a one-line summary, `STOPPING=1` when shutdown begins,
and, when the unit sets `WatchdogSec=`, `WATCHDOG=1` from the event loop every half period, so a
wedged loop gets the service restarted. Without `$NOTIFY_SOCKET` every call does nothing.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Mapping

from node.tasks import cancel_and_wait

log = logging.getLogger("node.sdnotify")


class SystemdNotifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = ("\0" + path[1:]) if path.startswith("@") else (path or None)
        self.watchdog_interval = _watchdog_interval(env)
        self.sent = 0
        self._failed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send one notification (`notify(READY=1, STATUS="...")`); False when off or not delivered."""
        if self.address is None:
            return False
        payload = "\n".join(f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)     # never stall the event loop on a full service-manager queue
                sock.sendto(payload.encode(), self.address)
        except OSError as exc:
            if not self._failed:            # say it once; the node runs the same with or without systemd
                self._failed = True
                log.warning("cannot notify systemd: %s", exc, extra={"address": os.environ.get("NOTIFY_SOCKET"),
                                                                     "reason": type(exc).__name__})
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        sent = self.notify(READY=1, STATUS=status)
        if sent and self.watchdog_interval and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watchdog(), name="sdnotify.watchdog")
        return sent

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    async def stopping(self) -> None:
        self.notify(STOPPING=1, STATUS="stopping")
        await cancel_and_wait(self._task)
        self._task = None

    async def _watchdog(self) -> None:
        assert self.watchdog_interval
        while True:
            self.notify(WATCHDOG=1)
            await asyncio.sleep(self.watchdog_interval / 2)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds of `WatchdogSec=` meant for this process (`WATCHDOG_PID`, when set, must be us)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000
