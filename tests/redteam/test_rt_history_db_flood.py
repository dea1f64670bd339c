"""Red team, real processes: one address floods a node's history database reads (`HISTORY_DB`) over its API.

A validator reads its history from a SQLite file holding 30,000 trades of one market (written here as the indexer
writes them), loopback not exempt from the public rate. One address (127.0.0.2) asks for the 1-minute candles of
all of them twenty times at once: every request passes the rate's check before the first is charged, and the
database has one worker thread. An honest reader from another network (127.0.5.5) asks the same once; its time
alone is measured from a third network first (a read is charged the worker's CPU it took, here about 230 units
of an address's 20 a second). Before the worker's queue was shared out, the honest read waited behind the twenty
(5.12 s against 0.29 s alone, load 8 on 2 cores); now one address holds at most MAX_READS_PER_ADDRESS places (the
rest 429 `history_rate`) and the worker's CPU is charged to it, so its next requests wait out what it spent.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from node.history_db import MAX_READS_PER_ADDRESS
from node.indexer import HistoryStore
from tests.harness import Cluster, NodeProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TRADES = 30_000
T0 = 1_600_000_000_000
NOT_LOOPBACK = "10.255.255.255/32"          # API_RATE_EXEMPT without this machine


def _database(path: Path) -> None:
    store = HistoryStore(path)
    store.db.execute("BEGIN")          # one transaction (the store commits each statement by itself)
    rows = [(f"t{n}", "BTC-USD", f"{100 + n % 7}.00", "0.0100", f"m{n}", f"k{n}", "buy", "a" * 64, "b" * 64, n + 1,
             T0 + 1_000 * n, n) for n in range(TRADES)]
    store.db.executemany("INSERT INTO trades (id, market, price, qty, maker_order_id, taker_order_id, taker_side, "
                         "maker_account, taker_account, height, time_ms, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    store.db.execute("INSERT INTO blocks (height, block_id, time_ms, trades) VALUES (?, ?, ?, ?)",
                     (TRADES, "f" * 64, T0 + 1_000 * TRADES, 1))
    store.db.execute("COMMIT")
    store.close()


async def _candles(node: NodeProcess, source: str) -> tuple[float, int, str]:
    url = f"{node.api_url}/candles/BTC-USD?interval=1m&from={T0}&to={T0 + 1_000 * TRADES}"
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as session:
        async with session.get(url) as answer:
            body = await answer.json()
    code = body.get("error", {}).get("code", "") if isinstance(body, dict) and answer.status != 200 else ""
    return time.monotonic() - started, answer.status, code


def test_one_address_cannot_queue_everyones_history_reads(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    _database(path)
    (node,) = cluster.chain(1, history_db=f"sqlite:///{path}", api_rate_exempt=NOT_LOOPBACK, heartbeat_interval=0.2)

    async def run() -> tuple[float, list[tuple[float, int, str]], tuple[float, int, str]]:
        alone, status, _ = await _candles(node, "127.0.6.6")     # its own address: a read is charged what it cost
        assert status == 200
        flood = [asyncio.ensure_future(_candles(node, "127.0.0.2")) for _ in range(20)]
        await asyncio.sleep(0.2)                # the flood is in
        honest = await _candles(node, "127.0.5.5")
        return alone, await asyncio.gather(*flood), honest

    alone, flood, (honest_wait, honest_status, _) = asyncio.run(run())
    assert honest_status == 200
    served = [status for _, status, _ in flood].count(200)
    assert served <= MAX_READS_PER_ADDRESS, f"one address had {served} of its 20 reads served at once"
    assert {code for _, status, code in flood if status != 200} <= {"history_rate", "rate_limited"}
    # behind the whole flood the honest read waited about 20 reads; behind one address's share, a few
    assert honest_wait < 4 * alone + 1.0, f"the honest read took {honest_wait:.2f} s against {alone:.2f} s alone"
