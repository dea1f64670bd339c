"""Real processes: trade history by block time. Candles and paged trades are equal on every node
(a follower that joined late included) and equal to a recomputation from /trades; the CLI exports every kept
trade as CSV through the cursors."""
from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from decimal import Decimal
from typing import Any

from tests.harness import Cluster, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _recomputed(trades: list[dict], size: int) -> list[dict]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for trade in trades:
        groups[trade["time_ms"] // size * size].append(trade)
    return [{"t": t, "open": g[0]["price"], "close": g[-1]["price"],
             "high": max(g, key=lambda x: Decimal(x["price"]))["price"],
             "low": min(g, key=lambda x: Decimal(x["price"]))["price"],
             "volume": str(sum(Decimal(x["qty"]) for x in g)),
             "quote_volume": str(sum(Decimal(x["qty"]) * Decimal(x["price"]) for x in g)), "trades": len(g)}
            for t, g in sorted(groups.items())]


def _normal(candles: list[dict]) -> list[dict]:
    return [{**c, "volume": str(Decimal(c["volume"])), "quote_volume": str(Decimal(c["quote_volume"]))}
            for c in candles]


def test_candles_and_pages_agree_on_every_node_and_with_the_trades(cluster: Cluster):
    nodes = cluster.chain(2, **FAST)
    nodes[0].new_accounts("a", "b")
    rng = random.Random(29)
    for _ in range(6):
        orders = [{"market": "BTC-USD", "side": side, "price": str(100 + rng.randint(-3, 3)), "qty": "1",
                   "account": account} for account, side in (("a", "sell"), ("b", "buy")) for _ in range(40)]
        status, body = nodes[0].api("POST", "/orders/batch?wait=10", {"orders": orders})
        assert status == 200 and all("error" not in r for r in body["results"]), body
    late = cluster.node("late", bootstrap_peers=nodes[0].p2p_address, **FAST)
    everyone = [*nodes, late]
    wait_until(lambda: converged(everyone), 30)
    trades = nodes[0].get("/trades/BTC-USD?limit=10000")["trades"]
    assert len(trades) > 50
    for node in everyone:
        assert node.get("/trades/BTC-USD?limit=10000")["trades"] == trades
        for interval, size in (("1m", 60_000), ("1h", 3_600_000)):
            answer = node.get(f"/candles/BTC-USD?interval={interval}")
            assert _normal(answer["candles"]) == _recomputed(trades, size), (node.name, interval)
        start, end = trades[10]["time_ms"], trades[-10]["time_ms"]
        paged, cursor = [], None
        while True:
            page = node.get(f"/trades/BTC-USD?from={start}&to={end}&limit=17" + (f"&cursor={cursor}" if cursor else ""))
            paged += page["trades"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == [t for t in trades if start <= t["time_ms"] < end]
    account = trades[0]["buyer"]
    fills = nodes[0].get(f"/accounts/{account}/fills?from=0")["trades"]
    assert fills == [t for t in trades if account in (t["buyer"], t["seller"])]
    status, body = nodes[0].api("GET", "/trades/BTC-USD?cursor=nope")
    assert status == 410 and body["error"]["code"] == "cursor_expired"
    status, body = nodes[0].api("GET", "/candles/BTC-USD?interval=7m")
    assert status == 400 and body["error"]["field"] == "interval"
    exported = late.cli("history", "BTC-USD", "--csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["id"] for r in rows] == [t["id"] for t in trades]
    shown = late.cli("candles", "BTC-USD", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["candles"]


def test_the_candles_channel_ends_equal_to_the_candles_endpoint(cluster: Cluster):
    import asyncio

    from tests.stream_client import StreamClient
    from tests.crossing import cross

    (node,) = cluster.chain(1, **FAST)
    node.new_accounts("maker", "taker")
    cross(node, 5, 100)

    async def watch() -> dict[int, dict]:
        client = await StreamClient.connect(node.api_url)
        try:
            chan = await client.subscribe("candles", market="BTC-USD", interval="1m")
            folded: dict[int, dict] = {}
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, cross, node, 60, 110)
            final = node.get("/candles/BTC-USD?interval=1m")["candles"]

            def caught_up() -> bool:
                for message in client.data.get(chan, []):
                    for candle in message["candles"]:
                        folded[candle["t"]] = candle
                client.data[chan] = []
                return sorted(folded.values(), key=lambda c: c["t"]) == final
            await client.wait_for(caught_up, 20)
            return folded
        finally:
            await client.close()

    folded = asyncio.run(watch())
    assert sum(c["trades"] for c in folded.values()) == len(node.get("/trades/BTC-USD?limit=10000")["trades"])
