"""The stream's shares per source: subscriptions per address, per network and in all, refused with
a clear error and the connection kept; unread bytes per address, per network and in all, where only clients
that are behind are cut; who was refused is recorded; and a client that never reads is never held after its
connection ends."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Awaitable, Callable, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import node.marketdata.server as stream_server
from node.api.base import errors_as_json
from node.marketdata import MarketFeed, StatusChannel, StreamServer
from node.marketdata.session import CLOSE_SLOW_CONSUMER, StreamSession
from p2p.public.refusals import RefusalLog
from p2p.public.sources import Shares
from tests.raw_ws import StalledClient
from tests.stream_client import StreamClient
from tests.unit.marketdata.fakes import MARKETS, DictSource, RecordingTransport

Connect = Callable[[str], Awaitable[StreamClient]]
BOOKS = [{"channel": "book", "market": market, "depth": depth} for market in ("BTC-USD", "ETH-USD")
         for depth in (1, 10, 25, 100, 250)]


@pytest.fixture
async def served() -> AsyncIterator[tuple[StreamServer, Connect, RefusalLog]]:
    refusals = RefusalLog()
    feed = MarketFeed(list(MARKETS), DictSource())
    status = StatusChannel(lambda: {"node": {"node_id": "n1"}}, interval=60)
    stream = StreamServer(feed, status, check_token=lambda token: False, max_clients=20, max_buffer=1 << 20,
                          hello=lambda: {}, subscriptions=Shares(per_address=5, per_subnet=8, total=10),
                          refusals=refusals)
    app = web.Application(middlewares=[errors_as_json])
    app.router.add_get("/ws", stream.handle)
    server = TestServer(app, host="0.0.0.0")
    await server.start_server()
    clients: list[StreamClient] = []

    async def connect(source: str) -> StreamClient:
        client = await StreamClient.connect(f"http://127.0.0.1:{server.port}", local_address=source)
        clients.append(client)
        return client

    yield stream, connect, refusals
    for client in clients:
        await client.close()
    await stream.close_all()
    await server.close()


async def test_subscriptions_are_shared_per_address_per_network_and_in_all(served):
    stream, connect, refusals = served
    first, second = await connect("127.0.0.1"), await connect("127.0.0.1")
    for request in BOOKS[:3]:
        await first.subscribe(**request)
    for request in BOOKS[3:5]:
        await second.subscribe(**request)
    refused = await first.request(event="subscribe", **BOOKS[5])
    assert refused["event"] == "error" and refused["code"] == "too_many_subscriptions_from_you"
    assert refused["msg"] == "at most 5 subscriptions from one address", refused
    assert (await first.request(event="ping"))["event"] == "pong", "the connection stays"

    neighbour = await connect("127.0.0.2")                  # the same /24: the network's share is 8
    for request in BOOKS[:3]:
        await neighbour.subscribe(**request)
    refused = await neighbour.request(event="subscribe", **BOOKS[3])
    assert refused["code"] == "too_many_subscriptions_from_you" and "one network" in refused["msg"], refused

    elsewhere = await connect("127.0.1.5")                  # another network: its own share, up to the cap on all
    await elsewhere.subscribe(**BOOKS[0])
    await elsewhere.subscribe(**BOOKS[1])
    refused = await elsewhere.request(event="subscribe", **BOOKS[2])
    assert refused["code"] == "subscriptions_full" and refused["msg"] == "at most 10 subscriptions on this node in all"

    chan = first.events[1]["chan"]                          # its first `subscribed`: giving one back frees a share
    assert (await first.request(event="unsubscribe", chan=chan))["event"] == "unsubscribed"
    await elsewhere.subscribe(**BOOKS[2])
    await second.close()                                    # and a connection that goes gives back all of its
    await asyncio.wait_for(_until(lambda: stream.subscriptions_by_source.held == 8), 5)
    await first.subscribe(**BOOKS[6])

    assert stream.counters["refused_subscriptions"] == 3
    reasons = {row["source"]: row["reasons"] for row in refusals.view()["addresses"]}
    assert reasons == {"127.0.0.1": {"ws_subscriptions_per_address": 1},
                       "127.0.0.2": {"ws_subscriptions_per_subnet": 1},
                       "127.0.1.5": {"ws_subscriptions_total": 1}}


async def test_clients_over_their_source_share_get_429_and_are_recorded(served):
    stream, connect, refusals = served
    stream.clients_by_source = Shares(per_address=2, per_subnet=3, total=20)
    await connect("127.0.0.1")
    await connect("127.0.0.1")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect("127.0.0.1")
    assert refused.value.status == 429
    await connect("127.0.0.3")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect("127.0.0.4")
    assert refused.value.status == 429
    await connect("127.0.2.1")
    view = refusals.view()
    assert [(row["source"], row["reasons"]) for row in view["subnets"]] == \
        [("127.0.0.0/24", {"ws_clients_per_address": 1, "ws_clients_per_subnet": 1})]


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def _session(transport: RecordingTransport, peer: str, unread: Shares, closed: list[tuple[str, str]]) -> StreamSession:
    return StreamSession(transport, max_buffer=10_000, peer=peer, unread=unread,
                         on_closed=lambda session, reason: closed.append((session.peer, reason)))


async def test_unread_bytes_are_shared_and_only_clients_that_are_behind_are_cut():
    unread = Shares(per_address=1000, per_subnet=1500, total=2500)
    closed: list[tuple[str, str]] = []
    slow_a, slow_b, fast_a = RecordingTransport(), RecordingTransport(), RecordingTransport()
    sessions = {"slow_a": _session(slow_a, "203.0.113.1", unread, closed),
                "slow_b": _session(slow_b, "203.0.113.1", unread, closed),
                "fast_a": _session(fast_a, "203.0.113.1", unread, closed)}

    def batch(*names: str) -> None:
        for name in names:
            sessions[name].send(b'{"x":1}')
            sessions[name].flush()

    slow_a.backlog = 600
    batch("slow_a", "fast_a")
    assert unread.by_address == {"203.0.113.1": 600} and closed == []
    slow_b.backlog = 600                                # the address now holds 1,200 unread: over its 1,000
    batch("slow_b")
    assert closed == [("203.0.113.1", "slow_consumer_address")] and sessions["slow_b"].closing is not None
    assert unread.by_address == {"203.0.113.1": 600}, "what a cut client held is given back"
    batch("fast_a")                                     # a client that keeps up is never cut for its neighbours
    assert sessions["fast_a"].closing is None
    slow_a.backlog = 0                                  # the slow one caught up: its share is back
    batch("slow_a")
    assert unread.held == 0 and sessions["slow_a"].closing is None

    neighbours = [RecordingTransport() for _ in range(3)]     # three addresses of one /24, each within its share
    for n, transport in enumerate(neighbours):
        transport.backlog = 900
        session = _session(transport, f"198.51.100.{n}", unread, closed)
        session.send(b'{"x":1}')
        session.flush()
    assert closed[1:] == [("198.51.100.1", "slow_consumer_subnet"), ("198.51.100.2", "slow_consumer_subnet")]


async def test_the_cap_on_all_unread_bytes_cuts_the_clients_behind_whoever_they_are():
    unread = Shares(per_address=1000, per_subnet=1000, total=1500)
    closed: list[tuple[str, str]] = []
    transports = [RecordingTransport() for _ in range(3)]
    sessions = [_session(t, f"192.0.{n}.1", unread, closed) for n, t in enumerate(transports)]
    for session, transport in zip(sessions, transports):
        transport.backlog = 700
        session.send(b'{"x":1}')
        session.flush()
    assert closed == [("192.0.2.1", "slow_consumer_total")] and unread.held == 1400


async def test_over_the_cap_on_all_the_heaviest_network_makes_room_not_a_bystander():
    unread = Shares(per_address=1000, per_subnet=2000, total=1500)
    closed: list[tuple[str, str]] = []
    heavy = [RecordingTransport() for _ in range(2)]
    heavy_sessions = [_session(t, f"203.0.113.{n}", unread, closed) for n, t in enumerate(heavy)]
    bystander_transport = RecordingTransport()
    bystander = _session(bystander_transport, "198.51.100.7", unread, closed)
    for session, transport in zip(heavy_sessions, heavy):
        transport.backlog = 700
        session.send(b'{"x":1}')
        session.flush()
    bystander_transport.backlog = 200                   # a little behind, in a network of its own: 1,600 in all
    bystander.send(b'{"x":1}')
    bystander.flush()
    assert closed == [] and bystander.closing is None, "a light bystander is not cut for the heavy network"
    heavy_sessions[0].send(b'{"x":1}')                  # the heavy network's next write makes the room
    heavy_sessions[0].flush()
    assert closed == [("203.0.113.0", "slow_consumer_total")] and unread.held == 900


async def test_a_client_that_never_reads_is_dropped_with_its_buffer_when_its_heartbeat_fails(monkeypatch):
    """aiohttp closes a socket whose pong is late with transport.close(), which keeps the socket and all the
    client never read until it is written: the stream drops it instead."""
    monkeypatch.setattr(stream_server, "HEARTBEAT", 2.0)       # time for its buffer to fill first
    big = {"x": "y" * 200_000}
    feed = MarketFeed(list(MARKETS), DictSource())
    status = StatusChannel(lambda: big, interval=0.05)
    stream = StreamServer(feed, status, check_token=lambda token: False, max_clients=4, max_buffer=64 << 20,
                          hello=lambda: {})
    app = web.Application()
    app.router.add_get("/ws", stream.handle)
    server = TestServer(app)
    await server.start_server()
    status.start()
    client = await asyncio.to_thread(StalledClient, str(server.make_url("")).rstrip("/"), 4096)
    try:
        client.send({"event": "subscribe", "channel": "status"})
        await asyncio.wait_for(_until(lambda: any(s.unread_bytes for s in stream.sessions)), 10)
        session = next(iter(stream.sessions))
        transport = cast(asyncio.Transport, session.transport)      # aiohttp's, under the session's Protocol
        await asyncio.wait_for(_until(lambda: session.closing is not None), 10)
        assert session.closing == "client_gone", "the heartbeat ended it, not the buffer bound"
        await asyncio.wait_for(session.wait_closed(), 10)
        assert transport.get_write_buffer_size() == 0, "what the client never read is dropped"
        await asyncio.wait_for(_until(lambda: transport.get_extra_info("socket").fileno() == -1), 5)
    finally:
        client.sock.close()
        await stream.close_all()
        await status.stop()
        await server.close()


def test_a_session_closed_by_the_close_handshake_keeps_nothing_it_has_not_sent():
    """The rule alone: after the handshake, a socket still holding unsent bytes is aborted."""

    class ClosedAlready:
        async def close(self, code: int, message: bytes) -> bool:
            return False

    async def run() -> RecordingTransport:
        transport = RecordingTransport()
        transport.backlog = 5000
        session = StreamSession(transport, max_buffer=10_000)
        session.ws = ClosedAlready()
        session.close(CLOSE_SLOW_CONSUMER, "client_gone")
        await session.wait_closed()
        return transport

    assert asyncio.run(run()).aborted


async def test_a_full_stream_lets_a_newcomer_network_in_and_the_crowded_network_gives_up_its_least_used_client(
        served):
    """Every slot held from one /24, each client inside its caps: a client from another network gets in, and the
    crowded network's client with the fewest subscriptions is closed for it; a newcomer from the crowded network
    itself is refused, as before."""
    stream, connect, refusals = served
    stream.clients_by_source = Shares(per_address=4, per_subnet=4, total=4)
    crowd = [await connect(f"127.0.0.{host}") for host in (1, 2, 3, 4)]
    for index, client in enumerate(crowd):
        if index != 2:
            await client.subscribe("trades", market="BTC-USD")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect("127.0.0.5")
    assert refused.value.status == 503
    newcomer = await connect("127.0.2.1")
    assert (await newcomer.request(event="ping"))["event"] == "pong"
    closing = await asyncio.wait_for(crowd[2].ws.receive(), 5)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001, closing
    assert all(not client.ws.closed for index, client in enumerate(crowd) if index != 2)
    assert stream.counters["evicted"] == 1 and stream.clients_by_source.held == 4
    assert any(row["reasons"].get("ws_client_evicted") for row in refusals.view()["addresses"])


async def test_requests_without_a_token_draw_on_the_address_public_rate_charged_their_cpu(served, monkeypatch):
    """The stream's requests share the public rate limit of their address, whatever connection they come
    over: a candles snapshot of 40 ms of CPU puts the address in debt, so its other connection's next request
    is refused with an error event (the connection kept); another address and a client with the token go on."""
    from node.api.rate import PublicRateLimit

    stream, connect, _ = served
    stream.rate = PublicRateLimit(per_address=10, total=1000)
    stream.check_token = lambda token: token == "secret"

    def slow_candles(market: str, interval_ms: int, start_ms: object) -> list[object]:
        done = time.thread_time() + 0.04
        while time.thread_time() < done:
            pass
        return []
    monkeypatch.setattr(stream.feed.source, "candles", slow_candles)
    first, second = await connect("127.0.0.1"), await connect("127.0.0.1")
    await first.subscribe("candles", market="BTC-USD", interval="1m")
    refused = await second.request(event="ping")
    assert refused["event"] == "error" and refused["code"] == "rate_limited", refused
    assert (await second.request(event="ping"))["code"] == "rate_limited", "the connection is kept"
    assert (await (await connect("127.0.1.1")).request(event="ping"))["event"] == "pong"
    assert (await second.request(event="auth", token="secret"))["status"] == "ok", "the token is heard in debt"
    assert (await second.request(event="ping"))["event"] == "pong", "a client with the token is not counted"
    assert stream.counters["rate_limited"] >= 2


async def test_a_request_the_node_fails_on_is_refused_and_the_connection_kept(served, monkeypatch):
    stream, connect, _ = served

    def broken(*_args: object) -> None:
        raise TypeError("unhashable type: 'list'")
    monkeypatch.setattr(stream.feed, "subscribe_ticker", broken)
    client = await connect("127.0.0.1")
    reply = await client.request(event="subscribe", channel="ticker", market="BTC-USD")
    assert reply["event"] == "error" and reply["code"] == "invalid_request", reply
    assert (await client.request(event="ping"))["event"] == "pong"


async def test_a_full_stream_of_one_client_per_network_lets_a_newcomer_network_in_in_place_of_the_idlest(served):
    """Every slot held by a different /24, one client each: a newcomer from an unseen network gets in, and the
    client whose last request is the oldest is closed for it; a second client from a network already holding one
    is still refused."""
    stream, connect, refusals = served
    stream.clients_by_source = Shares(per_address=4, per_subnet=4, total=4)
    holders = [await connect(f"127.0.{net}.1") for net in (1, 2, 3, 4)]
    for index in (0, 2, 3):
        await holders[index].subscribe("trades", market="BTC-USD")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect("127.0.1.2")
    assert refused.value.status == 503
    newcomer = await connect("127.0.9.1")
    assert (await newcomer.request(event="ping"))["event"] == "pong"
    closing = await asyncio.wait_for(holders[1].ws.receive(), 5)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001, closing
    later = await connect("127.0.10.1")     # the first subscriber has been idle the longest since
    assert (await later.request(event="ping"))["event"] == "pong"
    closing = await asyncio.wait_for(holders[0].ws.receive(), 5)
    while closing.type == aiohttp.WSMsgType.TEXT:       # its trades snapshot first
        closing = await asyncio.wait_for(holders[0].ws.receive(), 5)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001, closing
    assert not holders[2].ws.closed and not holders[3].ws.closed
    assert stream.counters["evicted"] == 2 and stream.clients_by_source.held == 4
