"""The API's connection guard: a cap on open connections per address and in all, and a deadline for a
connection's first request headers, so slowloris clients (connections opened and fed a byte at a time)
are cut and cannot hold the sockets honest clients need. aiohttp has neither (its keep-alive timeout
counts idle time between requests, not a request that never finishes its headers).

`GuardedSite` listens like `web.TCPSite` but wraps each connection's aiohttp protocol in
`GuardedProtocol`, which refuses a connection over the caps at once and closes one whose first
request's headers have not arrived within `header_timeout`.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web

log = logging.getLogger("node.api.server")


@dataclass
class ConnectionGuard:
    per_address: int = 512
    total: int = 2048
    header_timeout: float = 10.0
    open_by_address: dict[str, int] = field(default_factory=dict)
    open_total: int = 0
    counters: dict[str, int] = field(default_factory=lambda: {"refused_per_address": 0, "refused_total": 0,
                                                              "header_timeouts": 0})

    def admit(self, address: str) -> bool:
        if self.open_total >= self.total:
            self.counters["refused_total"] += 1
            return False
        if self.open_by_address.get(address, 0) >= self.per_address:
            self.counters["refused_per_address"] += 1
            return False
        self.open_by_address[address] = self.open_by_address.get(address, 0) + 1
        self.open_total += 1
        return True

    def release(self, address: str) -> None:
        left = self.open_by_address.get(address, 0) - 1
        if left > 0:
            self.open_by_address[address] = left
        else:
            self.open_by_address.pop(address, None)
        self.open_total -= 1


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's caps and header deadline."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.address: str | None = None
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""        # the last bytes seen before the first request's headers ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)     # uvloop's transports are not asyncio's classes
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else ""
        if not self.guard.admit(address):
            self.transport.abort()
            return
        self.address = address
        self._deadline = asyncio.get_running_loop().call_later(self.guard.header_timeout, self._too_slow)
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.guard.counters["header_timeouts"] += 1
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.address is None:
            return
        if self._deadline is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._deadline.cancel()
                self._deadline = None
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.address is not None else None

    def pause_writing(self) -> None:
        if self.address is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.address is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.address is None:
            return
        self.guard.release(self.address)
        self.address = None
        self.inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """web.TCPSite whose connections pass through `guard`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)          # registers the site with its runner
        handler = self._runner.server
        assert handler is not None
        guard = self.guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedProtocol(handler(), guard), self._host, self._port, reuse_address=True)
