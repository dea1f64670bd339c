"""Each client of a Grenache HTTP server gets a share (issue 25, "Fair under flood"): requests (frames on the message
path) per address, per /24 and in all, refused unread with 429 "ERR_BUSY"; connections per address, per /24 and in
all; headers and bodies within their deadlines. Real HTTP on loopback, clients bound to other loopback /24s (all of
127.0.0.0/8 is on lo) so that each is another address or network to the server."""
from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import aiohttp
import orjson
import pytest

from p2p.grenache.limits import GrenacheLimits, ServerLimits
from p2p.grenache.rpc import GrenacheHTTPClient, GrenacheHTTPServer, GrenacheRemoteError
from p2p.public.rate import ClientRate
from p2p.routing.grenache_path import broadcast_name, frames_in, unicast_name
from p2p.rpc.server import RpcServer
from p2p.grenache.grape import GrapeClient
from p2p.grenache.workers import GrenacheEndpoint
from tests.fake_grape import FakeGrape
from tests.unit.node.test_api_guard import _trickle
from tests.unit.p2p.test_grenache_path import SERVICE, frame, gnet  # noqa: F401 - gnet is a fixture

pytestmark = pytest.mark.timeout(60)


class Client:
    """A Grenache caller whose connections come from `source` (a loopback address of our choosing)."""

    def __init__(self, source: str, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))

    async def post(self, key: str, payload: Any = None, body: bytes | None = None) -> tuple[int, Any]:
        """(HTTP status, the reply's data or its error text)."""
        data = orjson.dumps([str(uuid.uuid4()), key, payload]) if body is None else body
        async with self.session.post(self.url, data=data, headers={"grc-compress": "none"}) as response:
            raw = await response.read()
        if response.status != 200:
            return response.status, raw.decode()
        _, err, answer = orjson.loads(raw)
        return 200, err or answer

    async def close(self) -> None:
        await self.session.close()


def limits(**changed: Any) -> GrenacheLimits:
    values: dict[str, Any] = {"rate_per_address": 100.0, "rate_total": 2000.0, "max_connections_per_address": 64,
                              "max_connections_per_subnet": 256, "max_connections": 1024, "header_timeout": 10.0,
                              "body_timeout": 10.0}
    return GrenacheLimits(**{**values, **changed})


async def echo(payload: Any) -> Any:
    return payload


class Clock:
    """Time stands still unless a test moves it: no token comes back while a test is slow."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def served(**changed: Any) -> tuple[GrenacheHTTPServer, ServerLimits]:
    applied = ServerLimits(limits(**changed), "grenache_rpc", "requests", clock=Clock())
    server = GrenacheHTTPServer({"echo": echo}, limits=applied)
    await server.start()
    return server, applied


async def post_once(source: str, port: int, body: bytes) -> tuple[int, Any]:
    client = Client(source, port)
    try:
        return await client.post("", body=body)
    finally:
        await client.close()


# --- the rates --------------------------------------------------------------------------------------------------
def test_a_request_worth_many_units_is_charged_on_credit_and_its_client_waits_the_debt_out():
    clock = Clock()
    rate = ClientRate(per_address=100, total=10_000, surface="grenache_msg", clock=clock)
    assert rate.check("203.0.113.5") is None
    rate.charge("203.0.113.5", 255)                      # a batch of 256 frames: 200 in the bucket, 56 owed
    refused = rate.check("203.0.113.5")
    assert refused is not None and refused[0] == "per_address" and refused[1] == pytest.approx(0.57)
    assert rate.check("203.0.114.5") is None, "another network is not held up"
    clock.now = 0.58
    assert rate.check("203.0.113.5") is None
    assert rate.refused == {"per_address": 1, "per_subnet": 0, "total": 0}


def test_what_a_message_request_is_worth_is_its_frames_whatever_it_holds():
    assert frames_in({"v": 1, "frames": ["x"] * 256}) == 256
    odd: object
    for odd in (None, 7, "frames", [], {"frames": "x"}, {"frames": []}, {"frames": [None] * 257}, {"op": "hello"}):
        assert frames_in(odd) == 1


async def test_one_address_past_its_rate_is_refused_unread_while_other_addresses_are_served():
    server, applied = await served(rate_per_address=5.0)          # bursts of 10, a /24's 40
    flooder, neighbour, stranger = (Client(source, server.port) for source in ("127.0.1.5", "127.0.1.6", "127.0.2.5"))
    try:
        answers = [await flooder.post("echo", i) for i in range(12)]
        assert answers[:10] == [(200, i) for i in range(10)] and answers[10:] == [(429, "ERR_BUSY")] * 2
        # refused before its body is read: a body that is no request at all is refused the same way
        assert await flooder.post("echo", body=b"\x00 not json") == (429, "ERR_BUSY")
        assert await neighbour.post("echo", "same /24, another address") == (200, "same /24, another address")
        assert await stranger.post("echo", "another /24") == (200, "another /24")
        async with GrenacheHTTPClient() as http:     # what a Grenache client makes of it: the code, at once
            for _ in range(10):
                await http.request(("127.0.0.1", server.port), "echo", None)
            with pytest.raises(GrenacheRemoteError) as info:
                await http.request(("127.0.0.1", server.port), "echo", None)
            assert info.value.code == "ERR_BUSY"
    finally:
        for client in (flooder, neighbour, stranger):
            await client.close()
        await server.stop()
    view = applied.view()
    assert view["refused"] == {"per_address": 4, "per_subnet": 0, "total": 0}
    (top, *_) = view["refused_by"]["addresses"]
    assert top["source"] == "127.0.1.5" and top["reasons"] == {"grenache_rpc_rate_per_address": 3}


async def test_one_network_rotating_addresses_meets_its_share_and_everyone_the_total():
    server, applied = await served(rate_per_address=2.0, rate_total=12.0)   # bursts: 4 an address, 16 a /24, 24 in all
    clients = [Client(f"127.0.5.{host}", server.port) for host in range(1, 9)]
    others = [Client(f"127.0.{net}.1", server.port) for net in (6, 8)]
    try:
        admitted = [status for client in clients for status, _ in [await client.post("echo", 1) for _ in range(4)]]
        assert admitted.count(200) == 16 and applied.rate.refused["per_subnet"] == 16
        assert [(await others[0].post("echo", 1))[0] for _ in range(4)] == [200] * 4
        statuses = [(await others[1].post("echo", 1))[0] for _ in range(4)]
        assert statuses == [200] * 4 and applied.rate.refused["total"] == 0
        assert (await others[1].post("echo", 1))[0] == 429                 # past its own share, and ...
        assert await post_once("127.0.9.1", server.port, b"[]") == (429, "ERR_BUSY")   # ... the 24 in all
        assert applied.rate.refused["total"] >= 1
    finally:
        for client in clients + others:
            await client.close()
        await server.stop()


async def test_the_message_path_charges_frames_per_client_and_serves_another_network(gnet) -> None:
    g = gnet(2, grenache_messages_rate=10.0)                   # bursts of 20 frames an address
    a, b = g.nodes
    await g.start()
    key = unicast_name(SERVICE, b.node_id)
    notes = [frame(a.router.unicast.relay_wrapper(b.node_id, {"type": "note", "id": f"n{i}", "origin": a.node_id,
                                                               "dst": b.node_id, "ts": time.time(), "hops": 0}))
             for i in range(3)]
    junk = [base64.b64encode(b"junk").decode()] * 25
    flooder, honest = Client("127.0.1.5", b.router.grenache.port), Client("127.0.2.5", b.router.grenache.port)
    try:
        status, answer = await flooder.post(key, {"v": 1, "frames": junk})
        assert status == 200 and answer["refused"] == {"malformed": 25}       # read, checked, and charged 25
        assert await flooder.post(key, {"v": 1, "frames": notes}) == (429, "ERR_BUSY")
        assert await flooder.post(broadcast_name(SERVICE), {"v": 1, "op": "hello"}) == (429, "ERR_BUSY")
        status, answer = await honest.post(key, {"v": 1, "frames": notes})
        assert status == 200 and answer == {"accepted": 3, "refused": {}}
    finally:
        await flooder.close()
        await honest.close()
    assert [m["id"] for m, _ in b.got] == ["n0", "n1", "n2"]
    shown = b.router.stats()["grenache"]["limits"]
    assert shown["refused"]["per_address"] == 2 and shown["rate_per_address"] == 10.0
    assert shown["refused_by"]["addresses"][0]["source"] == "127.0.1.5"
    assert b.peers.penalties == []                    # an HTTP caller proves nobody: no one is blamed


# --- the connections --------------------------------------------------------------------------------------------
async def _closed_unanswered(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def test_connections_past_an_address_share_are_refused_at_accept_and_others_still_connect():
    server, applied = await served(max_connections_per_address=3, max_connections_per_subnet=5)
    held = [await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.3.5", 0)) for _ in range(3)]
    more = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.3.5", 0))
        more.append(writer)
        assert await _closed_unanswered(reader), "the fourth from one address is closed unanswered"
        for host in (6, 7):                          # the /24's share is 5: two more addresses of it get one each
            more.append((await asyncio.open_connection("127.0.0.1", server.port, local_addr=(f"127.0.3.{host}", 0)))[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.3.8", 0))
        more.append(writer)
        assert await _closed_unanswered(reader), "the /24 is full"
        other = Client("127.0.4.5", server.port)
        assert await other.post("echo", "still served") == (200, "still served")
        await other.close()
    finally:
        for _, writer in held:
            writer.close()
        for writer in more:
            writer.close()
        await server.stop()
    counted = applied.refused_counts()
    assert counted["connections_per_address"] == 1 and counted["connections_per_subnet"] == 1
    assert counted["connections_total"] == counted["rate_per_address"] == 0
    reasons = {row["source"]: row["reasons"] for row in applied.view()["refused_by"]["addresses"]}
    assert reasons["127.0.3.5"] == {"grenache_rpc_connections_per_address": 1}


async def test_headers_or_a_body_trickled_a_byte_at_a_time_are_cut_at_their_deadline():
    server, applied = await served(header_timeout=0.5, body_timeout=0.5)
    body = orjson.dumps(["rid", "echo", "x" * 200])
    slow_requests = [b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200,
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)]
    try:
        for slow in slow_requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.5.5", 0))
            started = time.monotonic()
            if slow.endswith(b"\r\n\r\n"):           # complete headers, then the body a byte at a time
                writer.write(slow)
                slow = body
            trickle = asyncio.create_task(_trickle(writer, slow))
            other = Client("127.0.6.5", server.port)
            assert await other.post("echo", "meanwhile") == (200, "meanwhile")
            await other.close()
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                answer = b""
            trickle.cancel()
            writer.close()
            assert 0.45 <= time.monotonic() - started <= 3.0
            assert answer.startswith(b"HTTP/1.1 408") and answer.endswith(b"ERR_REQUEST_TIMEOUT"), answer
    finally:
        await server.stop()
    assert applied.guard.counters["header_timeouts"] == 1 and applied.guard.counters["body_timeouts"] == 1


# --- the RPC endpoint as the node builds it -----------------------------------------------------------------------
async def test_the_rpc_endpoint_refuses_a_flooding_address_and_reports_it():
    server = RpcServer()
    server.register("ping", lambda payload, peer: "pong")
    async with FakeGrape() as grape_server, GrapeClient([grape_server.url]) as grape:
        endpoint = GrenacheEndpoint(server, grape, ("ping",), limits=limits(rate_per_address=2.0))
        port = await endpoint.start()
        flooder, other = Client("127.0.7.1", port), Client("127.0.8.1", port)
        try:
            answers = [await flooder.post("ping") for _ in range(6)]
            assert answers == [(200, "pong")] * 4 + [(429, "ERR_BUSY")] * 2
            assert await other.post("ping") == (200, "pong")
            bad = (b"", b"[", b"[null]", b'["rid"]', b'["rid", 7]', orjson.dumps(["r", "ping", {"x": [1] * 99}]))
            answers = [await post_once(f"127.0.9.{i}", port, body) for i, body in enumerate(bad, 1)]
            assert answers == [(400, "ERR_REQUEST_INVALID")] * 3 + [(200, "ERR_REQUEST_INVALID")] * 2 + [(200, "pong")]
        finally:
            await flooder.close()
            await other.close()
            await endpoint.stop()
    view = endpoint.snapshot()["limits"]
    assert view["unit"] == "requests" and view["refused"]["per_address"] == 2
    assert view["refused_by"]["addresses"][0]["source"] == "127.0.7.1"
