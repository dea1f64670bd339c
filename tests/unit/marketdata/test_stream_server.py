"""The /ws endpoint over real WebSocket connections (in-process aiohttp server): every bad request gets
an error event and the connection lives on; floods, unknown tokens and full servers are refused."""
from __future__ import annotations

import asyncio

import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings, strategies as st

from node.api.base import errors_as_json
from node.marketdata import MarketFeed, StatusChannel, StreamServer
from node.marketdata.server import REQUEST_BURST
from tests.stream_client import StreamClient
from tests.unit.marketdata.fakes import MARKETS, DictSource


@pytest.fixture
async def served():
    feed = MarketFeed(list(MARKETS), DictSource())
    status = StatusChannel(lambda: {"node": {"node_id": "n1"}}, interval=0.05)
    stream = StreamServer(feed, status, check_token=lambda token: token == "secret", max_clients=3,
                          max_buffer=1 << 20, hello=lambda: {"node_id": "n1"})
    app = web.Application(middlewares=[errors_as_json])
    app.router.add_get("/ws", stream.handle)
    server = TestServer(app)
    await server.start_server()
    status.start()
    clients: list[StreamClient] = []

    async def connect() -> StreamClient:
        c = await StreamClient.connect(str(server.make_url("")).rstrip("/"))
        clients.append(c)
        return c

    yield stream, connect
    for c in clients:
        await c.close()
    await stream.close_all()
    await status.stop()
    await server.close()


BAD_REQUESTS = [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_request"),
    ('{"event": "subscribe", "channel": "candlez", "market": "BTC-USD"}', "unknown_channel"),
    ('{"event": "subscribe", "channel": "candles", "market": "BTC-USD", "interval": "7m"}', "invalid_interval"),
    ('{"event": "subscribe", "channel": "candles", "market": "BTC-USD", "interval": ["1m"]}', "invalid_interval"),
    ('{"event": "subscribe", "channel": "candles", "market": "BTC-USD", "interval": {"a": 1}}', "invalid_interval"),
    ('{"event": "subscribe", "channel": "book", "market": "DOGE-USD"}', "unknown_market"),
    ('{"event": "subscribe", "channel": "book", "market": "BTC-USD", "depth": 3}', "invalid_depth"),
    ('{"event": "subscribe", "channel": "trades"}', "unknown_market"),
    ('{"event": "unsubscribe", "chan": 99}', "not_subscribed"),
    ('{"event": "unsubscribe", "chan": "1"}', "not_subscribed"),
    ('{"event": "auth", "token": "wrong"}', "auth_failed"),
    ('{"event": "auth", "token": 5}', "auth_failed"),
    ('{"event": "subscribe", "channel": "orders"}', "auth_required"),
    ('{"event": "subscribe", "channel": "book", "market": "BTC-USD", "req": {"x": 1}}', "invalid_req"),
    ('{"event": "launch"}', "unknown_event"),
    ('{"channel": "book"}', "unknown_event"),
]


async def test_every_bad_request_gets_its_error_code_and_the_connection_stays(served):
    _, connect = served
    client = await connect()
    for text, code in BAD_REQUESTS:
        await client.ws.send_str(text)
        reply = await client.next_event()
        assert reply["event"] == "error" and reply["code"] == code, (text, reply)
    await client.ws.send_bytes(b"\x00\x01")
    assert (await client.next_event())["code"] == "text_only"
    assert (await client.request(event="ping", req="p1"))["event"] == "pong"


async def test_duplicate_and_too_many_subscriptions(served, monkeypatch):
    _, connect = served
    monkeypatch.setattr("node.marketdata.server.MAX_SUBSCRIPTIONS", 3)
    client = await connect()
    chan = await client.subscribe("book", market="BTC-USD")
    assert (await client.request(event="subscribe", channel="book", market="BTC-USD", depth=25))["code"] == \
        "already_subscribed"
    assert (await client.request(event="unsubscribe", chan=chan, req=1)) == {"event": "unsubscribed", "chan": chan,
                                                                               "req": 1}
    second = await client.subscribe("book", market="BTC-USD")      # allowed again once unsubscribed
    assert second != chan
    await client.subscribe("book", market="BTC-USD", depth=1)
    await client.subscribe("trades", market="ETH-USD")
    assert (await client.request(event="subscribe", channel="status"))["code"] == "too_many_subscriptions"


async def test_the_orders_channel_opens_only_with_a_token_the_node_accepts(served):
    _, connect = served
    client = await connect()
    assert (await client.request(event="auth", token="secret"))["status"] == "ok"
    chan = await client.subscribe("orders")
    await client.wait_for(lambda: chan in client.data)
    assert client.data[chan][0] == {"chan": chan, "seq": 0, "type": "snapshot", "orders": []}


async def test_status_updates_arrive_in_sequence(served):
    _, connect = served
    client = await connect()
    chan = await client.subscribe("status")
    await client.wait_for(lambda: len(client.data.get(chan, [])) >= 3)
    assert [m["seq"] for m in client.data[chan][:3]] == [0, 1, 2]
    assert client.data[chan][1]["status"] == {"node": {"node_id": "n1"}}


async def test_a_flooding_client_is_closed_with_4029(served):
    stream, connect = served
    client = await connect()
    for _ in range(REQUEST_BURST * 3):
        await client.ws.send_str('{"event": "ping"}')
    with pytest.raises(ConnectionError, match="CLOSE"):
        await client.wait_for(lambda: False)
    assert client.ws.close_code == 4029
    assert stream.disconnects.get("too_many_requests") == 1


async def test_clients_beyond_the_limit_get_a_503_before_the_upgrade(served):
    stream, connect = served
    for _ in range(3):
        await connect()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect()
    assert refused.value.status == 503 and stream.counters["refused_full"] == 1


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() |
                           st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=10)
requests = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from(["subscribe", "unsubscribe", "auth", "ping", "x"]) | json_values,
    "channel": st.sampled_from(["book", "trades", "ticker", "orders", "status"]) | json_values,
    "market": st.sampled_from(["BTC-USD", "ETH-USD"]) | json_values,
    "depth": st.sampled_from([1, 10, 25, 100, 250]) | json_values,
    "chan": st.integers(0, 20) | json_values, "token": json_values, "req": json_values})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(requests, min_size=1, max_size=8))
async def test_fuzzed_requests_always_get_an_answer(served, batch):
    stream, connect = served
    client = await connect()
    for request in batch:
        await client.ws.send_str(json.dumps(request))       # NaN and huge integers included
        reply = await client.next_event(timeout=5)
        assert reply["event"] in ("subscribed", "unsubscribed", "auth", "pong", "error"), reply
    assert (await client.request(event="ping"))["event"] == "pong"
    await client.close()
    await asyncio.wait_for(_gone(stream), 5)


async def _gone(stream: StreamServer) -> None:
    while stream.sessions:
        await asyncio.sleep(0.01)


async def test_a_failing_snapshot_source_is_an_error_event_not_a_dropped_connection():
    def broken() -> dict:
        raise RuntimeError("summary bug")

    feed = MarketFeed(list(MARKETS), DictSource())
    stream = StreamServer(feed, StatusChannel(broken), check_token=lambda t: False, max_clients=2,
                          max_buffer=1 << 20, hello=lambda: {})
    app = web.Application()
    app.router.add_get("/ws", stream.handle)
    server = TestServer(app)
    await server.start_server()
    client = await StreamClient.connect(str(server.make_url("")).rstrip("/"))
    try:
        await client.ws.send_json({"event": "subscribe", "channel": "status"})
        assert (await client.next_event())["event"] == "subscribed"
        assert (await client.next_event())["code"] == "snapshot_failed"
        assert stream.status.subs == [] and (await client.request(event="ping"))["event"] == "pong"
    finally:
        await client.close()
        await stream.close_all()
        await server.close()


def test_shares_are_counted_per_address_per_subnet_and_in_all():
    from p2p.public.sources import Shares, host_of, subnet_of

    assert subnet_of("203.0.113.77") == "203.0.113.0/24"
    assert subnet_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    # a dual-stack listener sees IPv4 clients as mapped addresses: each keeps its own /24, not one shared /48
    assert subnet_of("::ffff:203.0.113.77") == "203.0.113.0/24" != subnet_of("::ffff:198.51.100.1")
    assert subnet_of("fe80::1%eth0") == "fe80::/48"
    assert subnet_of("not an address") == "not an address"
    assert host_of("2001:db8:1:2::5") == host_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert host_of("::ffff:203.0.113.77") == "203.0.113.77" and host_of("203.0.113.77") == "203.0.113.77"
    v6 = Shares(per_address=2, per_subnet=10, total=10)
    v6.add("2001:db8:1:2::5", 2)
    assert v6.over("2001:db8:1:2::6") == "address", "a host's /64 is one client however many addresses it uses"
    assert v6.over("2001:db8:1:3::6") is None
    shares = Shares(per_address=2, per_subnet=3, total=5)
    for address in ("203.0.113.1", "203.0.113.1", "203.0.113.2"):
        assert shares.over(address) is None
        shares.add(address)
    assert shares.over("203.0.113.1") == "address"
    assert shares.over("203.0.113.9") == "subnet"
    assert shares.over("198.51.100.1") is None, "another network has its own share"
    shares.add("198.51.100.1", 2)
    assert shares.over("192.0.2.1") == "total", "the cap on all stands behind the shares"
    assert shares.over("198.51.100.1", 0) is None and shares.over("198.51.100.1", 1) == "total"
    shares.remove("203.0.113.2")
    assert shares.over("203.0.113.9") is None and "203.0.113.2" not in shares.by_address
    shares.add("198.51.100.1", -2)
    assert shares.held == 2 and "198.51.100.0/24" not in shares.by_subnet, "nothing held, nothing kept"
