"""Refusals before routing: what a refused request costs the API, a connection's request rate whoever holds it,
and keep-alive connections that keep asking past their refusals closed."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from config import load_settings
from node.api.server import FRONT_GATE, build_app, install_front_gate

API_TOKEN = "operator-token-0123456789abcdef"


async def _served(app: web.Application, gate: bool = True) -> tuple[TestServer, int]:
    """The app on a test server, its FrontGate in front of routing (`gate`); the server and its port."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.runner is not None and server.port is not None
    if gate:
        install_front_gate(app, server.runner.server)
    return server, server.port


def _app(tmp_path: Path, **settings: str) -> web.Application:
    from node.app import ExchangeNode

    cli = {"data_dir": str(tmp_path), "p2p_port": 0, "api_port": 0, "discovery_mdns": "false",
           "api_token": API_TOKEN, "api_public_rate": "5", "api_rate_exempt": "192.0.2.0/24", **settings}
    return build_app(ExchangeNode(load_settings(env={}, cli=cli)))


async def _pipelined(port: int, count: int, path: str = "/health", token: str | None = None) -> tuple[list[int], bool]:
    """`count` keep-alive GETs written at once on one connection; the statuses read back, and whether the server
    closed the connection before answering them all. Read in bulk, so the client costs little of the CPU."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode() * count)
    chunks: list[bytes] = []
    answered = 0
    try:
        while answered < count:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
            if not chunk:
                break
            chunks.append(chunk)
            answered += chunk.count(b"HTTP/1.1 ")
    except ConnectionError:
        pass
    writer.close()
    statuses = [int(part[:3]) for part in b"".join(chunks).split(b"HTTP/1.1 ")[1:]]
    return statuses, len(statuses) < count


async def _cpu_per_request(port: int, connections: int, each: int) -> float:
    """The process's CPU per GET of an address past its rate, pipelined on keep-alive connections (the client
    writes each connection's requests at once and reads in bulk: most of the CPU is the server's)."""
    await _pipelined(port, 20)                              # the address's burst, spent
    started, wall = time.thread_time(), time.monotonic()
    answers = await asyncio.gather(*(_pipelined(port, each) for _ in range(connections)))
    refilled = 5 * (time.monotonic() - wall) + 5            # API_PUBLIC_RATE 5/s refills while they are answered
    assert all(set(statuses) <= {200, 429} for statuses, _ in answers)
    assert sum(statuses.count(200) for statuses, _ in answers) <= refilled, [s.count(200) for s, _ in answers]
    return (time.thread_time() - started) / (connections * each)


async def test_refusing_before_routing_and_closing_abusive_keep_alive_connections_is_cheap(tmp_path):
    """The same 64 keep-alive connections of one address past its rate, 50 GETs each: refused after routing by
    the middleware (as before), every request read and answered; or by the front gate, which closes each after
    CLOSE_AFTER refusals, so what is pipelined behind is never parsed. Connection rates off: only the public
    rate's refusals are compared."""
    behind, behind_port = await _served(_app(tmp_path / "a", api_connection_rate="0"), gate=False)
    front_app = _app(tmp_path / "b", api_connection_rate="0")
    front, front_port = await _served(front_app)
    try:
        after_routing = await _cpu_per_request(behind_port, 64, 50)
        before_routing = await _cpu_per_request(front_port, 64, 50)
    finally:
        await behind.close()
        await front.close()
    print(f"\nCPU per refused GET: {after_routing * 1e6:.0f} us refused after routing, {before_routing * 1e6:.0f} us "
          f"at the front gate")
    assert before_routing < 0.5 * after_routing, (after_routing, before_routing)
    assert front_app[FRONT_GATE].closed >= 64


async def test_a_keep_alive_connection_that_keeps_asking_past_its_refusals_is_closed(tmp_path):
    app = _app(tmp_path, api_connection_rate="0")
    server, port = await _served(app)
    try:
        statuses, closed = await _pipelined(port, 200)
        token_statuses, token_closed = await _pipelined(port, 50, token=API_TOKEN)
    finally:
        await server.close()
    gate = app[FRONT_GATE]
    assert closed and statuses == [200] * 10 + [429] * gate.CLOSE_AFTER, statuses
    assert not token_closed and token_statuses == [200] * 50       # the token is not the public rate's
    assert gate.closed == 1
    # the address is refused at accept until its bucket refills (ConnectionGuard.shut), another address is not
    assert gate.shut("127.0.0.1") and not gate.shut("127.0.0.2")
    await asyncio.sleep(0.5)                                        # a token of its public rate (5 a second)
    assert not gate.shut("127.0.0.1")


async def test_one_connection_has_a_request_rate_whoever_holds_it(tmp_path):
    app = _app(tmp_path, api_connection_rate="20")
    server, port = await _served(app)
    try:
        statuses, closed = await _pipelined(port, 100, token=API_TOKEN)
        again, _ = await _pipelined(port, 5, token=API_TOKEN)             # a new connection has its own
    finally:
        await server.close()
    assert closed and statuses[-1] == 429 and 40 <= statuses.count(200) <= 42, statuses
    assert again == [200] * 5
    assert app[FRONT_GATE].refused["connection"] == 1


async def test_an_address_told_to_wait_has_its_writes_held_and_refused_unread_and_its_reads_served(tmp_path):
    """Once an address was answered 429 to a write (an account's rate), its writes on any connection are held
    until half the Retry-After has passed and then refused, before their bodies are read; reads go on."""
    app = _app(tmp_path, api_connection_rate="0")
    server, port = await _served(app)
    gate = app[FRONT_GATE]
    try:
        gate.quiet.refused("127.0.0.1", 1.0)            # as the gate does when a write of this address gets a 429
        reads, _ = await _pipelined(port, 3, token=API_TOKEN)
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"orders": []}'
        writer.write(b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = await asyncio.wait_for(reader.read(), 10)
        held = time.monotonic() - started
        writer.close()
    finally:
        await server.close()
    assert reads == [200] * 3
    assert answer.startswith(b"HTTP/1.1 429") and b"retry_after_ignored" in answer, answer
    assert 0.4 <= held < 2.0, held
    assert gate.refused["early"] == 1 and gate.closed == 1
