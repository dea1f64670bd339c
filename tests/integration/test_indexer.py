"""Real processes: `exchange-node indexer` keeps a node's history in SQLite, and in PostgreSQL (a real server the
test starts from Debian's package), through kill -9; and believes no node.

A devnet trades continuously while the indexer follows it; the indexer is killed -9 twice and started again.
At the end every trade and every fill the node serves is in the database exactly once, equal field by field,
and the candles computed from the database equal those recomputed from the node's trades and the node's own.
Behind a proxy that forges the blocks' certificates, then alters their transactions, the indexer names the
proxy, takes its blocks from the honest node given after it, and given the liar alone writes nothing.
"""
from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest

from node.indexer import HistoryStore, open_store
from tests.harness import Cluster, NodeProcess, wait_until
from tests.integration.test_light_client import LyingNode
from tests.postgres import needs_postgres, postgres_server

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _rows(url: str) -> int:
    """Trades in the database so far (0 before the indexer made its tables)."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return 0
    try:
        store = open_store(url)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(store.query("SELECT COUNT(*) FROM trades").fetchone()[0])
    finally:
        store.close()


def _indexer(node: NodeProcess, url: str, log: Path, *also: str) -> subprocess.Popen:
    nodes = [arg for each in (*also, node.api_url) for arg in ("--node", each)]
    return subprocess.Popen([sys.executable, "-m", "node.cli", "indexer", *nodes, "--db", url, "--interval", "0.1"],
                            env={**os.environ, "EXCHANGE_NODE_TOKEN": node.api_token or ""},
                            stdout=subprocess.DEVNULL, stderr=log.open("a"))


def _trade_forever(node: NodeProcess, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        price = f"{100 + n % 7}"
        node.api("POST", "/orders/batch?wait=0", {"orders": [
            {"market": "BTC-USD", "side": "sell", "price": price, "qty": "1", "account": "maker"},
            {"market": "BTC-USD", "side": "buy", "price": price, "qty": "1", "account": "taker"}]})


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_postgres)])
def test_the_indexer_killed_twice_holds_every_trade_and_fill_once(cluster: Cluster, tmp_path: Path, backend: str):
    with ExitStack() as stack:
        db = stack.enter_context(postgres_server()) if backend == "postgresql" else f"sqlite:///{tmp_path}/h.sqlite"
        served = _index_through_two_kills(cluster, db, tmp_path / "indexer.log")
        store = open_store(db)
        stack.callback(store.close)
        _check(store, served, cluster.nodes[0])
    assert "Traceback" not in (tmp_path / "indexer.log").read_text()


def _index_through_two_kills(cluster: Cluster, db: str, log: Path) -> list[dict]:
    (node,) = cluster.chain(1, **FAST)
    node.new_accounts("maker", "taker")
    stop = threading.Event()
    trader = threading.Thread(target=_trade_forever, args=(node, stop), daemon=True)
    trader.start()
    indexer = _indexer(node, db, log)
    try:
        for round_ in (1, 2):
            seen = _rows(db)
            wait_until(lambda: _rows(db) > seen + 50, 20, message=f"the indexer writes (round {round_})")
            indexer.send_signal(signal.SIGKILL)
            indexer.wait(10)
            indexer = _indexer(node, db, log)
        wait_until(lambda: _rows(db) > seen + 80, 20, message="the indexer writes after its second restart")
        stop.set()
        trader.join(10)
        served = node.get("/trades/BTC-USD?from=0&limit=10000")["trades"]
        wait_until(lambda: _rows(db) == len(served), 20, message="the indexer catches up with the node")
    finally:
        stop.set()
        indexer.send_signal(signal.SIGTERM)
        indexer.wait(10)
    return list(served)


def _check(store: HistoryStore, served: list[dict], node: NodeProcess) -> None:
    assert tuple(store.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM trades").fetchone()) == (len(served),) * 2
    assert store.query("SELECT COUNT(*) FROM fills").fetchone()[0] == 2 * len(served)
    keys = ("id", "price", "qty", "maker_order_id", "taker_order_id", "taker_side", "maker_account",
            "taker_account", "height", "time_ms")
    assert store.trades("BTC-USD") == [{k: t[k] for k in keys} for t in served]
    for account in {t["maker_account"] for t in served} | {t["taker_account"] for t in served}:
        fills = node.get(f"/accounts/{account}/fills?market=BTC-USD&from=0&limit=10000")["trades"]
        assert sorted(str(f["trade_id"]) for f in store.fills(account)) == sorted(t["id"] for t in fills)
    recomputed: dict[int, list[Decimal]] = {}
    for t in served:
        bucket = recomputed.setdefault(t["time_ms"] - t["time_ms"] % 60_000, [])
        bucket.append(Decimal(t["price"]))
    from_db = store.candles("BTC-USD", 60_000)
    assert [(c["t"], c["open"], c["high"], c["low"], c["close"]) for c in from_db] == [
        (t, prices[0], max(prices), min(prices), prices[-1]) for t, prices in recomputed.items()]
    node_candles = node.get("/candles/BTC-USD?interval=1m")["candles"]
    assert [(c["t"], Decimal(c["volume"]), c["trades"]) for c in node_candles] == [
        (c["t"], c["volume"], c["trades"]) for c in from_db]
    print(f"\nindexer ({type(store).__name__}): {len(served)} trades, {2 * len(served)} fills, {len(from_db)} "
          f"candles, kill -9 twice")


def _each_block(body: dict[str, Any], change: Any) -> dict[str, Any]:
    for item in body.get("blocks", []):
        block = msgpack.unpackb(base64.b64decode(item["block"]), raw=False)
        commit = msgpack.unpackb(base64.b64decode(item["commit"]), raw=False)
        block, commit = change(block, commit)
        item["block"] = base64.b64encode(msgpack.packb(block, use_bin_type=True)).decode()
        item["commit"] = base64.b64encode(msgpack.packb(commit, use_bin_type=True)).decode()
    return body


def forged_certificates(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if not path.startswith("/chain/blocks"):
        return body
    return _each_block(body, lambda block, commit: (block, [*commit[:3], [[i, bytes(b ^ 1 for b in s)]
                                                                       for i, s in commit[3]]]))


def altered_trades(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Each block's orders at another price (the header, and its certificate, as the validators signed them)."""
    def change(block: list, commit: list) -> tuple[list, list]:
        for item in block[1]:
            if item[0] == "a":
                for op in item[1][4]:
                    if op[0] == "new":
                        op[4] = "999"
        return block, commit
    return _each_block(body, change) if path.startswith("/chain/blocks") else body


def test_a_lying_node_is_named_and_nothing_it_altered_is_written(cluster: Cluster, tmp_path: Path):
    (node,) = cluster.chain(1, **FAST)
    node.new_accounts("maker", "taker")
    db, log = f"sqlite:///{tmp_path}/h.sqlite", tmp_path / "indexer.log"
    stop = threading.Event()
    trader = threading.Thread(target=_trade_forever, args=(node, stop), daemon=True)
    trader.start()
    liar = LyingNode(node)
    indexer = None
    try:
        for lie, reason in ((forged_certificates, "bad_certificate"), (altered_trades, "altered_block")):
            liar.lie = lie
            seen = _rows(db)
            indexer = _indexer(node, db, log, liar.url)
            wait_until(lambda: f"refused {liar.url} ({reason})" in log.read_text(), 20, message=f"{reason} named")
            wait_until(lambda: _rows(db) > seen + 20, 20, message="the honest node's blocks are indexed")
            indexer.send_signal(signal.SIGTERM)
            indexer.wait(10)
        held = _rows(db)
        alone = subprocess.Popen([sys.executable, "-m", "node.cli", "indexer", "--node", liar.url, "--db", db,
                                  "--interval", "0.1"], stdout=subprocess.DEVNULL, stderr=log.open("a"))
        wait_until(lambda: log.read_text().count(f"refused {liar.url} (altered_block)") >= 3, 20,
                   message="the liar alone refused again and again")
        assert _rows(db) == held
        alone.send_signal(signal.SIGTERM)
        alone.wait(10)
        stop.set()
        trader.join(10)
        served = node.get("/trades/BTC-USD?from=0&limit=10000")["trades"]
        indexer = _indexer(node, db, log)
        wait_until(lambda: _rows(db) == len(served), 20, message="the indexer catches up with the node")
    finally:
        stop.set()
        liar.close()
        if indexer is not None and indexer.poll() is None:
            indexer.send_signal(signal.SIGTERM)
            indexer.wait(10)
    store = open_store(db)
    try:
        keys = ("id", "price", "qty", "maker_order_id", "taker_order_id", "taker_side", "maker_account",
                "taker_account", "height", "time_ms")
        assert store.trades("BTC-USD") == [{k: t[k] for k in keys} for t in served]
        assert not store.query("SELECT COUNT(*) FROM trades WHERE price LIKE '999%'").fetchone()[0]
    finally:
        store.close()
    assert "Traceback" not in log.read_text()


@needs_postgres
def test_postgresql_keeps_the_chain_id_blocks_and_the_replays_snapshot():
    from node.indexer import PostgresHistoryStore
    from node.indexer_replica import VerifiedBlock

    with postgres_server() as url:
        store = PostgresHistoryStore(url)
        try:
            store.claim("c" * 64)
            store.add_blocks([VerifiedBlock(1, "b1", 1_000, [])], (1, b"\x00snapshot"))
            store.add_blocks([], (1, b"newer"))
            assert (store.snapshot(), store.progress(), store.chain_id()) == ((1, b"newer"), (1, "b1"), "c" * 64)
            with pytest.raises(ValueError):
                store.claim("d" * 64)
        finally:
            store.close()
