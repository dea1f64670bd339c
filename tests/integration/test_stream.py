"""The market data stream against real nodes, driven the way a client would: subscribe on one node,
trade on another, rebuild the book from snapshot + updates and compare it with GET /book; a client
that stops reading is cut off with 4008 while what the node holds for it stays under the bound."""
from __future__ import annotations

import asyncio
import random
import re
import urllib.request
from typing import Any

import aiohttp

from tests.harness import Cluster, NodeProcess, wait_until
from tests.raw_ws import StalledClient
from tests.stream_client import LocalBook, StreamClient

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def two_nodes(cluster: Cluster) -> tuple[NodeProcess, NodeProcess]:
    a, b = cluster.chain(2, **FAST)
    for node in (a, b):
        node.new_accounts("a", "b", "c", "d", "z")
    return a, b


def random_orders(rng: random.Random, count: int) -> list[dict]:
    return [{"market": "BTC-USD", "side": rng.choice(["buy", "sell"]), "type": rng.choice(["limit"] * 5 + ["ioc"]),
             "price": f"{rng.randint(9900, 10100) / 100:.2f}", "qty": f"{rng.randint(1, 20) / 10:.1f}",
             "account": rng.choice("abcd")} for _ in range(count)]


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_book_and_trades_from_another_node_arrive_in_sequence(cluster):
    a, b = two_nodes(cluster)
    a.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "99.00", "qty": "1", "account": "z"})
    client = await StreamClient.connect(a.api_url)
    try:
        book_chan = await client.subscribe("book", market="BTC-USD", depth=250)
        trades_chan = await client.subscribe("trades", market="BTC-USD")
        local = LocalBook(250)
        rng = random.Random(17)
        for _ in range(4):   # trades placed on B, seen on A's stream
            status, body = await in_thread(b.api, "POST", "/orders/batch?wait=5", {"orders": random_orders(rng, 60)})
            assert status == 200 and all("order" in r for r in body["results"]), body

        def caught_up() -> bool:
            for message in client.data.get(book_chan, [])[local.seq + 1:]:
                local.apply(message)           # raises on a sequence gap or a checksum mismatch
            return False

        async def settled() -> tuple[list[Any], list[Any]]:
            while True:
                book = await in_thread(a.get, "/book/BTC-USD?depth=250")
                trades = await in_thread(a.get, "/trades/BTC-USD?limit=10000")
                if book["final"]:              # every book a node serves is final (certified blocks only)
                    caught_up()
                    streamed = [t for m in client.data.get(trades_chan, []) for t in m["trades"]]
                    if (local.levels("bids"), local.levels("asks")) == (book["bids"], book["asks"]) and \
                            [t["id"] for t in streamed] == [t["id"] for t in trades["trades"]]:
                        return streamed, trades["trades"]
                await client.receive(timeout=10)

        streamed, final = await asyncio.wait_for(settled(), 60)
        assert len(final) >= 20, "the random orders should have traded"
        assert [m["seq"] for m in client.data[trades_chan]] == list(range(len(client.data[trades_chan])))
        assert client.data[trades_chan][0]["type"] == "snapshot"
        assert [t["price"] for t in streamed] == [t["price"] for t in final]
        assert [t["qty"] for t in streamed] == [t["qty"] for t in final]
        assert local.seq >= 4, "each batch became final before the next was sent: one update each at least"
        assert client.data[book_chan][0]["type"] == "snapshot"
    finally:
        await client.close()


def metric(node: NodeProcess, name: str) -> float:
    text = urllib.request.urlopen(node.api_url + "/metrics", timeout=10).read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_client_that_stops_reading_is_cut_off_and_never_held_beyond_the_bound(cluster):
    markets = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]
    bound = 65536
    # batches of 250 orders as fast as the node takes them: the account rates are not what this measures
    node = cluster.node("a", markets=",".join(markets), ws_send_buffer_bytes=bound, p2p_enabled="false",
                        account_ops_rate=0, group_ops_rate=0)
    node.new_accounts("a", "b", "c", "d")
    wait_until(lambda: node.status()["chain_id"], 10, message="the standalone node founds its chain")
    requests = [{"event": "subscribe", "channel": "book", "market": market, "depth": depth}
                for market in markets for depth in (1, 10, 25, 100, 250)]
    requests += [{"event": "subscribe", "channel": "trades", "market": market} for market in markets]
    slow = StalledClient(node.api_url, receive_buffer=4096)
    control = await StreamClient.connect(node.api_url)    # same subscriptions, reads everything
    received = 0

    async def read_all() -> None:
        nonlocal received
        while True:
            message = await control.ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            received += len(message.data)

    try:
        for request in requests:
            slow.send(request)
            await control.ws.send_json(request)
        reader = asyncio.create_task(read_all())
        rng = random.Random(3)
        held: list[float] = []
        cut = 'exchange_node_stream_disconnects_total{reason="slow_consumer"}'
        batches = 0
        while batches < 200 and (not await in_thread(metric, node, cut) or received < 40 * bound):
            orders = [dict(o, market=rng.choice(markets)) for o in random_orders(rng, 250)]
            status, _ = await in_thread(node.api, "POST", "/orders/batch", {"orders": orders})
            assert status == 200
            batches += 1
            held.append(await in_thread(metric, node, "exchange_node_stream_unread_bytes"))
        assert await in_thread(metric, node, cut) == 1, "the stalled client was never cut off"
        assert received >= 40 * bound, f"a reading client got {received} bytes of the same stream"
        assert max(held) <= 2 * (bound + 64 * 1024), f"the node held {max(held):.0f} bytes for its two clients"
        code, reason, frames = await in_thread(slow.drain_until_close)
        assert code == 4008 and reason.startswith("slow consumer"), (code, reason)
        assert frames > 0
        assert await in_thread(metric, node, "exchange_node_stream_clients") == 1     # the reader stays
        reader.cancel()
    finally:
        slow.close()
        await control.close()
