"""The WebTransport endpoint in this process, with the Python client: sessions, the served certificate's hash,
a wrong path, the per-address cap, and a certificate changed while sessions are open."""
from __future__ import annotations

import asyncio
import time

import pytest

from node.browser.certs import make_certificate
from node.browser.server import Pipe, SessionHandler, WebTransportServer
from tests.wt_client import BrowserClient


class Echo(SessionHandler):
    def __init__(self, pipe: Pipe, cert: bytes) -> None:
        self.pipe, self.cert = pipe, cert
        self.closed: list[str] = []

    def data_received(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            if line:
                self.pipe.write(b'{"req":%s,"cert":"%s"}\n' % (line, self.cert.hex().encode()))

    def close(self, code: int, reason: str) -> None:
        self.closed.append(reason)


async def serve(per_address: int = 8) -> tuple[WebTransportServer, list[Echo]]:
    sessions: list[Echo] = []

    def new(pipe: Pipe, cert: bytes, peer: str) -> Echo:
        sessions.append(Echo(pipe, cert))
        return sessions[-1]
    server = WebTransportServer("127.0.0.1", 0, "/p", make_certificate(time.time()), new,
                                max_per_address=per_address, max_per_subnet=per_address * 2, max_total=64)
    await server.start()
    return server, sessions


async def test_a_session_echoes_and_names_the_served_certificate_then_a_new_one_for_new_connections() -> None:
    server, sessions = await serve()
    first = BrowserClient()
    try:
        await first.open(f"https://127.0.0.1:{server.port}/p")
        first.write(b"1\n")
        answer = await first.next_event(5)
        assert first.proto is not None and answer["cert"] == first.proto.cert_sha256().hex()
        renewed = make_certificate(time.time())
        server.use_certificate(renewed)
        second = BrowserClient()
        await second.open(f"https://127.0.0.1:{server.port}/p")
        second.write(b"2\n")
        assert (await second.next_event(5))["cert"] == renewed.sha256.hex()
        first.write(b"3\n")
        assert (await first.next_event(5))["cert"] == answer["cert"], "an open session keeps its certificate"
        await second.close()
    finally:
        await first.close()
        await server.stop()
    assert sessions[0].closed, "stopping closes the sessions"


async def released(server: WebTransportServer) -> None:
    while server.connections.held:
        await asyncio.sleep(0.01)


async def test_a_wrong_path_is_refused_and_the_per_address_cap_holds() -> None:
    server, _ = await serve(per_address=2)
    clients = [BrowserClient() for _ in range(3)]
    try:
        with pytest.raises(ConnectionError):
            await clients[0].open(f"https://127.0.0.1:{server.port}/elsewhere", timeout=5)
        await clients[0].close()
        await asyncio.wait_for(released(server), 5)       # the endpoint heard the refused client's close
        await clients[1].open(f"https://127.0.0.1:{server.port}/p")
        await clients[2].open(f"https://127.0.0.1:{server.port}/p")
        assert server.connections.held == 2
        extra = BrowserClient()
        with pytest.raises((ConnectionError, TimeoutError)):
            await extra.open(f"https://127.0.0.1:{server.port}/p", timeout=3)
        await extra.close()
        assert server.refused == {"per_address": 1}
    finally:
        for client in clients:
            await client.close()
        await server.stop()


async def test_garbage_datagrams_take_nothing_down() -> None:
    import os
    import socket

    server, _ = await serve()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for size in (1, 20, 1200, 1500):
            for first in (0x00, 0xC0, 0xC3, 0x40):       # short headers, long headers (Initial), junk
                sock.sendto(bytes([first]) + os.urandom(size - 1), ("127.0.0.1", server.port))
        client = BrowserClient()
        await client.open(f"https://127.0.0.1:{server.port}/p")      # (after the garbage: the socket read it all)
        await client.close()
        await asyncio.wait_for(released(server), 5)      # no address validated by a retry: no state for the garbage
        client = BrowserClient()
        await client.open(f"https://127.0.0.1:{server.port}/p")
        client.write(b"1\n")
        assert (await client.next_event(5))["req"] == 1, "the endpoint still serves"
        await client.close()
    finally:
        sock.close()
        await server.stop()
