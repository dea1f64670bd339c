"""The history indexer's SQLite side: how fast it takes pages of trades, and how fast it answers history queries.

Ingest: blocks of 1,000 synthetic trades (two fills each) through `HistoryStore.add_blocks` (each block with its
trades, fills and height in one transaction, `synchronous=FULL`), against a baseline measured in the same run: the same rows
inserted into one bare table without fills, indexes, conflict handling or cursor. The goal column divides the
rate by the 5,000 trades/s a busy chain may make. With Debian's postgresql and psycopg installed, the same pages
go into a PostgreSQL server the benchmark starts (tests/postgres.py: Unix socket, fsync off, so the row is the
statements' cost, not a disk's). Queries: a day of 1-minute candles (a trade every
`--every` ms of block time) and 10,000 fills of one account, p50 and p99 over `--queries` runs. The node and its
HTTP API are not in these figures (tests/integration/test_indexer.py runs the whole path).
Run: `python -m bench indexer [--trades=N] [--every=MS] [--queries=N] [--quick] [--smoke]`.
"""
from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from bench.options import parse_options, percentile
from bench.table import print_table
from node.indexer import HistoryStore
from node.indexer_replica import VerifiedBlock

GOAL_TRADES_S = 5_000
PAGE = 1_000                    # trades per block written (one add_blocks call each)
DAY_MS = 86_400_000
ACCOUNTS = ("a" * 64, "b" * 64, "c" * 64)


def synthetic(count: int, every_ms: int, offset: int = 0) -> list[dict[str, object]]:
    """`count` trades a block-time step of `every_ms` apart; account a is in every one."""
    return [{"id": f"{n:032x}:{n:032x}", "market": "BTC-USD", "price": f"{100 + n % 50}.{n % 100:02d}", "qty": f"{1 + n % 9}.0000",
             "maker_order_id": f"{n:032x}", "taker_order_id": f"{n + 1:032x}", "taker_side": "buy" if n % 2 else "sell",
             "maker_account": ACCOUNTS[0], "taker_account": ACCOUNTS[1 + n % 2], "height": 1 + n // 10,
             "time_ms": n * every_ms} for n in range(offset, offset + count)]


def ingest(store: HistoryStore, trades: list[dict[str, object]]) -> float:
    """Seconds to write `trades` as verified blocks of PAGE trades, one transaction each."""
    started = time.perf_counter()
    for start in range(0, len(trades), PAGE):
        page = trades[start:start + PAGE]
        store.add_blocks([VerifiedBlock(1 + start // PAGE, f"{start:064x}", int(page[0]["time_ms"]), page)])  # type: ignore[call-overload]
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


def main(flags: list[str]) -> None:
    opts = parse_options(flags, {"trades": 86_400, "every": 1_000, "queries": 20},
                         quick={"trades": 20_000, "every": 4_320, "queries": 10},
                         smoke={"trades": 2_000, "every": 43_200, "queries": 3})
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
        span_ms = count * every
        candles = timed(lambda: store.candles("BTC-USD", 60_000), queries)
        fills_of = ACCOUNTS[1]
        held = len(store.fills(fills_of))
        limited = timed(lambda: store.query(
            "SELECT * FROM fills WHERE account = ? ORDER BY time_ms LIMIT 10000", (fills_of,)).fetchall(), queries)
        print_table(f"History queries over {span_ms / DAY_MS:.2f} days of block time, {queries} runs",
                    ["query", "rows", "p50 ms", "p99 ms"],
                    [["1-minute candles (all)", len(store.candles("BTC-USD", 60_000)), percentile(candles, 0.5),
                      percentile(candles, 0.99)],
                     [f"fills of one account (of {held:,}, first 10,000)", min(held, 10_000),
                      percentile(limited, 0.5), percentile(limited, 0.99)]])
        store.close()
