"""Real process: one client holding the market data stream gets its share and never what everyone
shares. One address opening 2,000 WebSockets gets 50 (the rest 429 with Retry-After) while clients from
another address of its /24 and from another network keep connecting and subscribing and an honest trader's
orders all go through; one address subscribing to everything it can gets its 256 subscriptions (the rest a
`too_many_subscriptions_from_you` error on a connection that stays) while others subscribe and get their
data. Both refusals show in /status by source."""
from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from typing import Iterator

import aiohttp
import pytest

from tests.flood import HonestClient
from tests.harness import Cluster, NodeProcess, wait_until
from tests.stream_client import StreamClient

ATTEMPTS = 2_000
PER_ADDRESS = 50                    # WS_MAX_CLIENTS_PER_ADDRESS's default
SUBSCRIPTIONS_PER_ADDRESS = 256     # WS_MAX_SUBSCRIPTIONS_PER_ADDRESS's default
EVERY_SUBSCRIPTION = ([{"channel": "book", "market": "BTC-USD", "depth": d} for d in (1, 10, 25, 100, 250)]
                      + [{"channel": "candles", "market": "BTC-USD", "interval": i}
                         for i in ("1m", "5m", "15m", "1h", "4h", "1d")]
                      + [{"channel": c, "market": "BTC-USD"} for c in ("trades", "ticker")] + [{"channel": "status"}])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    cluster = Cluster(tmp_path_factory.mktemp("stream-limits"))
    try:
        node = cluster.node("n", p2p_enabled="false")
        wait_until(lambda: node.status()["chain_id"], 10, message="the standalone node founds its chain")
        yield node
    finally:
        cluster.close()


@pytest.fixture
def honest(node: NodeProcess) -> Iterator[HonestClient]:
    """A trader placing an order every 200 ms at the same node, its baseline taken before the test's attack."""
    client = HonestClient(node)
    client.start()
    try:
        wait_until(lambda: len(client.samples) >= 3, 20, message="the honest trader's first orders are final")
        yield client
    finally:
        client.stop.set()
        client.join(40)


def _no_honest_order_lost(client: HonestClient, attack: tuple[float, float]) -> None:
    client.stop.set()
    client.join(40)
    during = client.window(*attack)
    assert during and None not in [latency for _, latency in client.samples], client.samples
    print(f"\nhonest orders: {len(client.samples)} final, {len(during)} during the attack, "
          f"slowest {max(latency or 0 for _, latency in client.samples) * 1000:.0f} ms")


def _refused_from(node: NodeProcess, address: str) -> dict[str, int]:
    rows = node.status()["public_refused"]["addresses"]
    return next((row["reasons"] for row in rows if row["source"] == address), {})


async def _subscribes(api_url: str, source: str) -> None:
    """A newcomer from `source`: connects, subscribes to the book, gets its snapshot, leaves."""
    client = await StreamClient.connect(api_url, local_address=source)
    try:
        chan = await client.subscribe("book", market="BTC-USD")
        await client.wait_for(lambda: chan in client.data, timeout=10)
        assert client.data[chan][0]["type"] == "snapshot"
    finally:
        await client.close()


async def test_one_address_opening_two_thousand_websockets_leaves_room_for_everyone_else(node, honest):
    url = node.api_url.replace("http", "ws", 1) + "/ws"
    hog = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.1", 0), limit=0))
    opened: list[aiohttp.ClientWebSocketResponse] = []
    refused: dict[int, int] = {}
    retry_after: set[str] = set()
    newcomers = {"127.0.0.2": 0, "127.0.1.7": 0}    # another address of the hog's /24, another network
    hog_done = asyncio.Event()

    async def attack() -> None:
        try:
            for _ in range(ATTEMPTS):
                try:
                    opened.append(await hog.ws_connect(url))
                except aiohttp.WSServerHandshakeError as exc:
                    refused[exc.status] = refused.get(exc.status, 0) + 1
                    retry_after.add(exc.headers.get("Retry-After", "") if exc.headers is not None else "")
        finally:
            hog_done.set()

    async def everyone_else() -> None:
        while not hog_done.is_set() or min(newcomers.values()) < 3:
            for source in newcomers:
                await _subscribes(node.api_url, source)
                newcomers[source] += 1

    started = time.monotonic()
    try:
        await asyncio.gather(attack(), everyone_else())
        ended = time.monotonic()
        assert len(opened) == PER_ADDRESS and refused == {429: ATTEMPTS - PER_ADDRESS}, (len(opened), refused)
        assert retry_after == {"10"}
        assert min(newcomers.values()) >= 3, newcomers
    finally:
        for ws in opened:
            await ws.close()
        await hog.close()
    _no_honest_order_lost(honest, (started, ended))
    with urllib.request.urlopen(node.api_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    counted = re.search(r"^exchange_node_stream_refused_per_source_total (\S+)$", metrics, re.M)
    assert counted is not None and float(counted.group(1)) == ATTEMPTS - PER_ADDRESS, counted
    assert _refused_from(node, "127.0.0.1").get("ws_clients_per_address") == ATTEMPTS - PER_ADDRESS
    print(f"2,000 attempts in {ended - started:.1f} s; newcomers subscribed meanwhile: {newcomers}")


async def test_one_address_subscribing_to_everything_gets_its_share_and_others_still_subscribe(node, honest):
    clients = [await StreamClient.connect(node.api_url, local_address="127.0.0.1") for _ in range(PER_ADDRESS)]
    started = time.monotonic()
    try:
        for client in clients:                   # every subscription it can ask, without waiting for answers
            for request in EVERY_SUBSCRIPTION:
                await client.ws.send_json({"event": "subscribe", **request})
        answers: dict[str, int] = {}
        for client in clients:
            for _ in EVERY_SUBSCRIPTION:
                answer = await client.next_event()
                key = answer["event"] if answer["event"] == "subscribed" else answer["code"]
                answers[key] = answers.get(key, 0) + 1
        attempts = PER_ADDRESS * len(EVERY_SUBSCRIPTION)
        assert answers == {"subscribed": SUBSCRIPTIONS_PER_ADDRESS,
                           "too_many_subscriptions_from_you": attempts - SUBSCRIPTIONS_PER_ADDRESS}, answers
        refusal = next(e for c in clients for e in c.events if e.get("code") == "too_many_subscriptions_from_you")
        assert refusal["msg"] == f"at most {SUBSCRIPTIONS_PER_ADDRESS} subscriptions from one address", refusal
        pongs = [(await client.request(event="ping"))["event"] for client in clients]
        assert pongs == ["pong"] * PER_ADDRESS, "every connection stays"
        # others still subscribe, and get the book's updates as the honest trader's orders rest on it
        watchers = [await StreamClient.connect(node.api_url, local_address=source)
                    for source in ("127.0.0.2", "127.0.1.7")]
        try:
            for watcher in watchers:
                chan = await watcher.subscribe("book", market="BTC-USD")
                await watcher.wait_for(lambda: len(watcher.data.get(chan, [])) >= 2, timeout=20)
        finally:
            for watcher in watchers:
                await watcher.close()
        ended = time.monotonic()
    finally:
        for client in clients:
            await client.close()
    _no_honest_order_lost(honest, (started, ended))
    refused = _refused_from(node, "127.0.0.1")
    assert refused.get("ws_subscriptions_per_address") == attempts - SUBSCRIPTIONS_PER_ADDRESS, refused

