"""GrenacheHTTPClient against GrenacheHTTPServer (and raw HTTP): wire format, errors, gzip, limits."""
from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import pytest
from aiohttp import web

from p2p.grenache.rpc import (GrenacheHTTPClient, GrenacheHTTPServer, GrenacheProtocolError, GrenacheRemoteError,
                              GrenacheTimeout, GrenacheUnavailable)
from tests.harness import closed_port

pytestmark = pytest.mark.timeout(20)


async def echo(payload):
    return {"echo": payload}


async def boom(payload):
    raise RuntimeError("secret traceback material")


async def coded(payload):
    raise GrenacheRemoteError("ERR_INSUFFICIENT_FUNDS")


async def slow(payload):
    await asyncio.sleep(payload)
    return "late"


async def unencodable(payload):
    return {1, 2}


HANDLERS = {"echo": echo, "boom": boom, "coded": coded, "slow": slow, "bad": unencodable}


@pytest.fixture
async def server():
    srv = GrenacheHTTPServer(HANDLERS, max_body_bytes=4096, handler_timeout=2.0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def client():
    c = GrenacheHTTPClient(timeout=2.0)
    try:
        yield c
    finally:
        await c.close()


def addr(server) -> tuple[str, int]:
    return ("127.0.0.1", server.port)


async def raw_post(port: int, body: bytes, compress: bool = False) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(f"http://127.0.0.1:{port}/", data=body,
                                headers={"grc-compress": "gzip" if compress else "none"}) as resp:
            return resp.status, await resp.read()


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("payload", ["hello", 42, None, [1, "two", {"three": 3.5}], {"nested": {"ü": "ß"}}])
async def test_roundtrip(server, client, payload, compress):
    assert await client.request(addr(server), "echo", payload, compress=compress) == {"echo": payload}


async def test_many_concurrent_requests_share_the_pool(server, client):
    results = await asyncio.gather(*(client.request(addr(server), "echo", i) for i in range(200)))
    assert results == [{"echo": i} for i in range(200)]


async def test_handler_exception_is_error_string_without_traceback(server, client):
    status, body = await raw_post(server.port, b'["r1", "boom", null]')
    assert status == 200
    assert json.loads(body) == ["r1", "ERR_SERVICE_FAILED", None]
    assert b"secret" not in body and b"Traceback" not in body
    with pytest.raises(GrenacheRemoteError) as info:
        await client.request(addr(server), "boom", 1)
    assert info.value.code == "ERR_SERVICE_FAILED"


async def test_handler_coded_error_and_unknown_service(server, client):
    with pytest.raises(GrenacheRemoteError) as info:
        await client.request(addr(server), "coded", 1)
    assert info.value.code == "ERR_INSUFFICIENT_FUNDS"
    with pytest.raises(GrenacheRemoteError) as info:
        await client.request(addr(server), "nope", 1)
    assert info.value.code == "ERR_SERVICE_UNKNOWN"


async def test_unencodable_reply_becomes_error(server, client):
    with pytest.raises(GrenacheRemoteError) as info:
        await client.request(addr(server), "bad", 1)
    assert info.value.code == "ERR_REPLY_ENCODING"


async def test_server_handler_timeout(server, client):
    server.handler_timeout = 0.1
    with pytest.raises(GrenacheRemoteError) as info:
        await client.request(addr(server), "slow", 1.0)
    assert info.value.code == "ERR_TIMEOUT"


async def test_client_timeout_is_typed(server, client):
    with pytest.raises(GrenacheTimeout):
        await client.request(addr(server), "slow", 1.0, timeout=0.2)


async def test_connection_refused_is_unavailable(client):
    with pytest.raises(GrenacheUnavailable):
        await client.request(("127.0.0.1", closed_port()), "echo", 1)


async def test_server_always_answers_three_element_array_echoing_rid(server):
    for body, expected in [
        (b'["rid-1", "echo", "x"]', ["rid-1", None, {"echo": "x"}]),
        (b'[7, "echo"]', [7, None, {"echo": None}]),
        (b'["rid-2", 5, "x"]', ["rid-2", "ERR_REQUEST_INVALID", None]),
        (b'["rid-3"]', ["rid-3", "ERR_REQUEST_INVALID", None]),
    ]:
        status, raw = await raw_post(server.port, body)
        assert status == 200 and json.loads(raw) == expected


@pytest.mark.parametrize("body", [b"not json", b'{"rid": 1}', b"[]", b"[null, \"echo\", 1]", b""])
async def test_unreadable_rid_gets_plain_error_status(server, body):
    status, raw = await raw_post(server.port, body)
    assert status == 400 and raw == b"ERR_REQUEST_INVALID"


async def test_gzip_reply_is_gzipped_without_content_encoding(server):
    status, raw = await raw_post(server.port, gzip.compress(b'["g1", "echo", "zip"]'), compress=True)
    assert status == 200
    assert json.loads(gzip.decompress(raw)) == ["g1", None, {"echo": "zip"}]


async def test_gzip_header_with_plain_body_is_accepted(server):
    status, raw = await raw_post(server.port, b'["g2", "echo", 1]', compress=True)
    assert status == 200 and json.loads(gzip.decompress(raw)) == ["g2", None, {"echo": 1}]


async def test_oversized_request_rejected(server, client):
    with pytest.raises(GrenacheRemoteError) as info:
        await client.request(addr(server), "echo", "x" * 10_000)
    assert info.value.code == "ERR_REQUEST_TOO_LARGE"
    # a small gzip body that inflates past the limit (gzip bomb) is refused too
    with pytest.raises(GrenacheRemoteError) as info:
        await client.request(addr(server), "echo", "y" * 100_000, compress=True)
    assert info.value.code == "ERR_REQUEST_TOO_LARGE"
    assert await client.request(addr(server), "echo", "still fine") == {"echo": "still fine"}


async def test_client_reply_size_limit(server):
    c = GrenacheHTTPClient(max_reply_bytes=100)
    try:
        with pytest.raises(GrenacheProtocolError) as info:
            await c.request(addr(server), "echo", "z" * 500)
        assert info.value.code == "ERR_REPLY_TOO_LARGE"
    finally:
        await c.close()


@pytest.fixture
async def rogue():
    """A server that answers whatever `rogue.reply(body) -> (status, bytes)` says."""
    state = {"reply": lambda body: (200, b"")}

    async def handle(request):
        status, body = state["reply"](await request.read())
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["port"] = runner.addresses[0][1]
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status,body,exc,code", [
    (200, b"", GrenacheProtocolError, "ERR_REPLY_EMPTY"),
    (200, b"<html>", GrenacheProtocolError, "ERR_REPLY_INVALID"),
    (200, b'{"a": 1}', GrenacheProtocolError, "ERR_REPLY_INVALID"),
    (200, b'["other-rid", null, 1]', GrenacheProtocolError, "ERR_REPLY_RID_MISMATCH"),
    (500, b'[null, "ERR_HEADER_PARSE_GR", null]', GrenacheRemoteError, "ERR_HEADER_PARSE_GR"),
    (500, b"Internal Server Error", GrenacheUnavailable, "ERR_REQUEST_GENERIC"),
    (413, b"ERR_REQUEST_TOO_LARGE", GrenacheRemoteError, "ERR_REQUEST_TOO_LARGE"),
    (404, b"Not Found", GrenacheRemoteError, "ERR_HTTP_404"),
])
async def test_client_handles_odd_replies(rogue, client, status, body, exc, code):
    rogue["reply"] = lambda _: (status, body)
    with pytest.raises(exc) as info:
        await client.request(("127.0.0.1", rogue["port"]), "k", 1)
    assert type(info.value) is exc and info.value.code == code


async def test_client_gunzips_reply_and_checks_rid(rogue, client):
    def reply(body):
        rid = json.loads(gzip.decompress(body))[0]
        return 200, gzip.compress(json.dumps([rid, None, "ok"]).encode())
    rogue["reply"] = reply
    assert await client.request(("127.0.0.1", rogue["port"]), "k", 1, compress=True) == "ok"


async def test_server_restart_and_client_reuse(server, client):
    assert await client.request(addr(server), "echo", 1) == {"echo": 1}
    await server.stop()
    with pytest.raises(GrenacheUnavailable):
        await client.request(addr(server), "echo", 1)
    await server.start()
    assert await client.request(addr(server), "echo", 2) == {"echo": 2}


async def test_closed_client_raises_typed(client):
    await client.close()
    with pytest.raises(GrenacheUnavailable):
        await client.request(("127.0.0.1", 1), "echo", 1)
