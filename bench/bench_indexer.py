"""The history indexer: how fast it replays certified blocks, writes trades, and answers history queries.

Ingest: blocks of 1,000 synthetic trades (two fills each) through `HistoryStore.add_blocks` (each block with its
trades, fills and height in one transaction, `synchronous=FULL`), against a baseline measured in the same run: the same rows
inserted into one bare table without fills, indexes, conflict handling or cursor. The goal column divides the
rate by the 5,000 trades/s a busy chain may make. With Debian's postgresql and psycopg installed, the same pages
go into a PostgreSQL server the benchmark starts (tests/postgres.py: Unix socket, fsync off, so the row is the
statements' cost, not a disk's). Replay: `--blocks` certified blocks of `--per-block` trades replayed by the
indexer from the genesis (node/indexer_follow.py: certificate, signatures, apply, state hash, write), against a
node's own apply of the same blocks in the same run. Queries: a day of 1-minute candles (a trade every `--every`
ms of block time) and a page of 10,000 fills of one account through the node's HISTORY_DB reads
(node/history_db.py), p50 and p99 over `--queries` runs, against the same answers computed from the rows in
memory. The node's HTTP API is not in these figures (tests/integration/test_indexer.py runs the whole path).
Run: `python -m bench indexer [--trades=N] [--every=MS] [--queries=N] [--blocks=N] [--per_block=N] [--quick]
[--smoke]`.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.options import parse_options, percentile
from bench.table import print_table
from exchange.app import ExchangeParams, ExchangeState
from exchange.app.candles import candles, trades_between
from exchange.app.txs import NewOrderOp, sign_tx
from exchange.app.views import View, trade_view
from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, vote_bytes
from exchange.chain.state.chainstate import ChainState, encode_item
from exchange.chain.types.codec import pack, unpack
from exchange.chain.types.genesis import Genesis
from exchange.crypto import SigningKey
from exchange.markets import Market, MarketRegistry
from node.history_db import DbHistory, row_of
from node.indexer_follow import Follower
from node.indexer import HistoryStore
from node.indexer_replica import VerifiedBlock

GOAL_TRADES_S = 5_000
PAGE = 1_000                    # trades per block written (one add_blocks call each)
DAY_MS = 86_400_000
ACCOUNTS = ("a" * 64, "b" * 64, "c" * 64)


def synthetic(count: int, every_ms: int, offset: int = 0) -> list[dict[str, object]]:
    """`count` trades a block-time step of `every_ms` apart; account a is in every one."""
    return [{"id": f"{n:032x}:{n:032x}", "market": "BTC-USD", "price": f"{100 + n % 50}.{n % 100:02d}",
             "qty": f"{1 + n % 9}.0000",
             "maker_order_id": f"{n:032x}", "taker_order_id": f"{n + 1:032x}", "taker_side": "buy" if n % 2 else "sell",
             "maker_account": ACCOUNTS[0], "taker_account": ACCOUNTS[1 + n % 2], "height": 1 + n // 10,
             "time_ms": n * every_ms} for n in range(offset, offset + count)]


def ingest(store: HistoryStore, trades: list[dict[str, object]]) -> float:
    """Seconds to write `trades` as verified blocks of PAGE trades, one transaction each (each named by its last
    trade's height and time: the database holds every trade up to it)."""
    started = time.perf_counter()
    for start in range(0, len(trades), PAGE):
        page = trades[start:start + PAGE]
        last = page[-1]
        store.add_blocks([VerifiedBlock(int(last["height"]), f"{start:064x}", int(last["time_ms"]), page)])  # type: ignore[call-overload]
    return time.perf_counter() - started


def bare(path: Path, trades: list[dict[str, object]]) -> float:
    """The baseline: the same rows, one plain table, one transaction per page, nothing else."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id TEXT, price TEXT, qty TEXT, maker TEXT, taker TEXT, side TEXT, ma TEXT, ta TEXT, "
               "height INTEGER, time_ms INTEGER)")
    started = time.perf_counter()
    for start in range(0, len(trades), PAGE):
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [tuple(v for k, v in t.items() if k != "market") for t in trades[start:start + PAGE]])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def timed(query: object, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        query()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _postgres_rate(trades: list[dict[str, object]]) -> float | None:
    """Trades/s of the same pages into a PostgreSQL server started for the purpose, or None when none can be."""
    from tests.postgres import BIN, postgres_server
    import importlib.util

    if BIN is None or importlib.util.find_spec("psycopg") is None:
        return None
    from node.indexer import PostgresHistoryStore

    with postgres_server() as url:
        store = PostgresHistoryStore(url)
        try:
            return len(trades) / ingest(store, trades)
        finally:
            store.close()


def certified_chain(blocks: int, per_block: int, ops_per_tx: int = 50) -> tuple[Genesis, list[dict[str, object]]]:
    """`blocks` blocks certified by one validator, each with `per_block` trades: a maker's sells and a taker's
    buys at one price, `ops_per_tx` orders a signed transaction (as a busy client batches), as /chain/blocks
    serves them."""
    validator, maker, taker = (SigningKey(hashlib.sha256(name).digest()) for name in (b"v", b"maker", b"taker"))
    genesis = Genesis("bench-indexer", 1_000, validator.public_key, (validator.public_key,),
                      exchange=ExchangeParams("BTC-USD").to_wire())
    state = ChainState(genesis, ExchangeState(ExchangeParams.from_wire(genesis.exchange), genesis.chain_id))
    items: list[dict[str, object]] = []
    last: Commit | None = None
    for height in range(1, blocks + 1):
        time_ms = 10_000 + 1_000 * height
        txs = [encode_item(sign_tx(key.sign, key.public_key, genesis.chain_id, f"{height}-{n}", time_ms + 60_000,
                                   [NewOrderOp("BTC-USD", side, "limit", f"{100 + height % 7}.00", "1", None)] *
                                   min(ops_per_tx, per_block - n)))
               for n in range(0, per_block, ops_per_tx) for key, side in ((maker, "sell"), (taker, "buy"))]
        header = Header(genesis.chain_id, height, time_ms, state.last_block_id, validator.public_key, state.hash,
                        state.validators.hash, Block.txs_hash(txs), last)
        block = Block(header, txs)
        state.apply_block(block)
        last = Commit(height, 0, header.id, ((0, validator.sign(vote_bytes(genesis.chain_id, PRECOMMIT, height, 0,
                                                                            header.id))),))
        items.append({"height": height, "block": base64.b64encode(pack(block.wire())).decode(),
                      "commit": base64.b64encode(pack(last.wire())).decode()})
    return genesis, items


def replay_rates(path: Path, blocks: int, per_block: int) -> tuple[float, float, int]:
    """Seconds for a node's own apply of the blocks (the baseline: no certificate, no signature, no write), and
    for the indexer's replay (each block's certificate and signatures checked, applied, the vouched ones written
    to SQLite); and the trades written."""
    genesis, items = certified_chain(blocks, per_block)
    decoded = [Block.from_wire(unpack(base64.b64decode(str(item["block"])))) for item in items]
    own = ChainState(genesis, ExchangeState(ExchangeParams.from_wire(genesis.exchange), genesis.chain_id))
    started = time.perf_counter()
    for block in decoded:
        own.apply_block(block)
    applied = time.perf_counter() - started
    store = HistoryStore(path)
    node = _Served(genesis, items)
    follower = Follower(store, [node])
    started = time.perf_counter()
    while follower.step()[0]:
        pass
    replayed = time.perf_counter() - started
    written = int(store.query("SELECT COUNT(*) FROM trades").fetchone()[0])
    store.close()
    return applied, replayed, written


class _Served:
    """The blocks as a node's /chain/blocks serves them, 200 an answer."""

    url = "bench"

    def __init__(self, genesis: Genesis, items: list[dict[str, object]]) -> None:
        self.genesis_doc, self.items = genesis, items

    def genesis(self) -> object:
        return {"chain_id": self.genesis_doc.chain_id,
                "genesis": base64.b64encode(pack(self.genesis_doc.wire())).decode()}

    def epochs(self) -> object:
        return {"proofs": []}

    def blocks(self, start: int) -> object:
        return {"blocks": self.items[start - 1:start + 199]}


class _NothingKept:
    """The node's kept trades when the database holds them all: none past it."""

    def __init__(self) -> None:
        self.registry = MarketRegistry([Market("BTC-USD")])

    def markets(self) -> MarketRegistry:
        return self.registry

    def trades_between(self, market: str, start_ms: int | None, end_ms: int | None, cursor: str | None,
                       limit: int, account: str | None) -> tuple[list[View], str | None]:
        return [], None


def _queries(path: Path, trades: list[dict[str, object]], runs: int, span_ms: int) -> None:
    """p50/p99 of the history routes' database reads (node/history_db.py), against the same answers computed
    from the rows in memory (the state's own functions: what a node keeping every trade would do)."""
    kept = _NothingKept()
    market = kept.registry.get("BTC-USD")
    history = DbHistory(lambda: HistoryStore(path, shared=True))
    rows = [row_of(market, trade) for trade in trades]
    fills_of = ACCOUNTS[1]
    day = asyncio.run(history.candles(kept, "BTC-USD", 60_000, None, None))
    page, _ = asyncio.run(history.trades_between(kept, "BTC-USD", None, None, None, 10_000, fills_of))
    assert day == candles(rows, 60_000, None, None, market) and \
        page == [trade_view(r, market) for r in trades_between(rows, None, None, None, 10_000, fills_of)[0]]
    from_db = timed(lambda: asyncio.run(history.candles(kept, "BTC-USD", 60_000, None, None)), runs)
    in_memory = timed(lambda: candles(rows, 60_000, None, None, market), runs)
    fills_db = timed(lambda: asyncio.run(history.trades_between(kept, "BTC-USD", None, None, None, 10_000, fills_of)),
                     runs)
    fills_memory = timed(lambda: [trade_view(r, market) for r in
                                  trades_between(rows, None, None, None, 10_000, fills_of)[0]], runs)
    history.close()
    print_table(f"History queries over {span_ms / DAY_MS:.2f} days of block time ({len(trades):,} trades), {runs} runs: "
                "HISTORY_DB reads against the same answer from rows in memory",
                ["query", "rows", "p50 ms", "p99 ms", "in memory p99 ms", "vs memory"],
                [["1-minute candles (all) from the database", len(day), percentile(from_db, 0.5),
                  percentile(from_db, 0.99), percentile(in_memory, 0.99),
                  f"{percentile(from_db, 0.99) / percentile(in_memory, 0.99):.1f}x"],
                 ["fills of one account, a page of 10,000", len(page), percentile(fills_db, 0.5),
                  percentile(fills_db, 0.99), percentile(fills_memory, 0.99),
                  f"{percentile(fills_db, 0.99) / percentile(fills_memory, 0.99):.1f}x"]])


def main(flags: list[str]) -> None:
    opts = parse_options(flags, {"trades": 86_400, "every": 1_000, "queries": 20, "blocks": 60, "per_block": 500},
                         quick={"trades": 20_000, "every": 4_320, "queries": 10, "blocks": 20},
                         smoke={"trades": 2_000, "every": 43_200, "queries": 3, "blocks": 3, "per_block": 100})
    count, every, queries = opts["trades"], opts["every"], opts["queries"]
    trades = synthetic(count, every)
    with tempfile.TemporaryDirectory(prefix="bench-indexer-") as tmp:
        base = bare(Path(tmp) / "bare.sqlite", trades)
        store = HistoryStore(Path(tmp) / "history.sqlite")
        took = ingest(store, trades)
        again = ingest(store, trades[: min(len(trades), 10 * PAGE)])       # blocks written twice: nothing new
        rate, base_rate = count / took, count / base
        rows = [["bare SQLite table (baseline)", base_rate, 0, base_rate / PAGE, "1.00x",
                 f"{base_rate / GOAL_TRADES_S:.1f}"],
                ["SQLite HistoryStore.add_blocks", rate, 2 * rate, rate / PAGE, f"{rate / base_rate:.2f}x",
                 f"{rate / GOAL_TRADES_S:.1f}"],
                ["  the same blocks again", min(count, 10 * PAGE) / again, 0, min(count, 10 * PAGE) / again / PAGE,
                 "-", "-"]]
        postgres = _postgres_rate(trades)
        if postgres is not None:
            rows.append(["PostgreSQL add_blocks", postgres, 2 * postgres, postgres / PAGE, f"{postgres / base_rate:.2f}x",
                         f"{postgres / GOAL_TRADES_S:.1f}"])
        print_table(f"Indexer ingest: {count:,} trades in blocks of {PAGE:,} (SQLite synchronous=FULL)",
                    ["writer", "trades/s", "fills/s", "pages/s", "vs bare table", f"x {GOAL_TRADES_S:,}/s goal"], rows)
        if postgres is None:
            print("  (no PostgreSQL row: needs Debian's postgresql package and psycopg)")
        applied, replayed, written = replay_rates(Path(tmp) / "replay.sqlite", opts["blocks"], opts["per_block"])
        total = opts["blocks"] * opts["per_block"]
        print_table(f"Indexer replay: {opts['blocks']:,} certified blocks of {opts['per_block']:,} trades (orders 50 a "
                    f"transaction), from the genesis (the last waits for the next header: not written)",
                    ["path", "blocks/s", "trades/s", "vs node's apply", f"x {GOAL_TRADES_S:,}/s goal"],
                    [["a node's own apply (baseline)", opts["blocks"] / applied, total / applied, "1.00x",
                      f"{total / applied / GOAL_TRADES_S:.2f}"],
                     ["indexer: verify, apply, write SQLite", (opts["blocks"] - 1) / replayed, written / replayed,
                      f"{applied / replayed:.2f}x", f"{written / replayed / GOAL_TRADES_S:.2f}"]])
        span_ms = count * every
        _queries(Path(tmp) / "history.sqlite", trades, queries, span_ms)
        store.close()
