"""Real processes: a node with HISTORY_DB answers its history routes from the indexer's database, the same as a
node answering from its own kept trades.

One validator trades; `exchange-node indexer` follows it into SQLite; a follower is started with HISTORY_DB naming
that file. Once trading stopped and the indexer caught up, every page of trades and fills (followed cursor by
cursor, with ranges) and the candles of every interval are the same on both nodes, and so is the stream's candle
snapshot. Rows deleted from the database then leave the follower's answers: it reads them there.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import Cluster, NodeProcess, wait_until
from tests.integration.test_indexer import FAST, _indexer, _rows, _trade_forever

FINALITY = ("height", "epoch", "role")


def _answer(node: NodeProcess, path: str) -> dict[str, Any]:
    return {k: v for k, v in node.get(path).items() if k not in FINALITY}


def _pages(node: NodeProcess, path: str) -> list[dict[str, Any]]:
    out, cursor = [], None
    while True:
        body = _answer(node, path + (f"&cursor={cursor}" if cursor else ""))
        out.append(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return out


async def _stream_candles(node: NodeProcess, interval: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(node.api_url.replace("http", "ws") + "/ws") as ws:
            await ws.send_json({"event": "subscribe", "channel": "candles", "market": "BTC-USD",
                                "interval": interval})
            async for message in ws:
                body = json.loads(message.data)
                if body.get("type") == "snapshot":
                    return list(body["candles"])
    raise AssertionError("no candles snapshot")


def test_a_node_reading_the_indexers_database_answers_as_one_keeping_every_trade(cluster: Cluster,
                                                                                  tmp_path: Path):
    path = tmp_path / "h.sqlite"
    db, log = f"sqlite:///{path}", tmp_path / "indexer.log"
    (node,) = cluster.chain(1, **FAST)
    node.new_accounts("maker", "taker")
    reader = cluster.node("reader", bootstrap_peers=node.p2p_address, history_db=db, **FAST)
    stop = threading.Event()
    trader = threading.Thread(target=_trade_forever, args=(node, stop), daemon=True)
    trader.start()
    indexer = _indexer(node, db, log)
    try:
        wait_until(lambda: _rows(db) > 120, 20, message="the indexer writes")
        stop.set()
        trader.join(10)
        served = node.get("/trades/BTC-USD?from=0&limit=10000")["trades"]
        wait_until(lambda: _rows(db) == len(served), 20, message="the indexer catches up with the node")
        wait_until(lambda: reader.status()["height"] >= node.status()["height"] - 1, 20, message="the reader follows")
        times = [t["time_ms"] for t in served]
        maker = served[0]["maker_account"]
        paths = ["/trades/BTC-USD?from=0&limit=17", f"/trades/BTC-USD?from={times[10]}&to={times[-10]}&limit=9",
                 f"/accounts/{maker}/fills?from=0&limit=23", f"/accounts/{maker}/fills?from={times[30]}&limit=1000"]
        for each in paths:
            assert _pages(reader, each) == _pages(node, each), each
        for interval in ("1m", "5m", "1h", "1d"):
            for query in ("", f"&from={times[7]}", f"&from={times[3]}&to={times[-5]}"):
                each = f"/candles/BTC-USD?interval={interval}{query}"
                assert _answer(reader, each) == _answer(node, each), each
        assert asyncio.run(_stream_candles(reader, "1m")) == asyncio.run(_stream_candles(node, "1m"))
    finally:
        stop.set()
        indexer.send_signal(signal.SIGTERM)
        indexer.wait(10)
    with sqlite3.connect(path) as gone:
        gone.execute("DELETE FROM fills WHERE height <= ?", (served[20]["height"],))
        gone.execute("DELETE FROM trades WHERE height <= ?", (served[20]["height"],))
    assert _answer(reader, "/trades/BTC-USD?from=0&limit=10000")["trades"][0]["id"] != served[0]["id"]
    assert _answer(node, "/trades/BTC-USD?from=0&limit=10000")["trades"] == served
