"""The history indexer's database: verified trades and fills in SQLite or PostgreSQL, resumable after a crash.

`exchange-node indexer --node API_URL [--node API_URL ...] --db sqlite:///PATH | postgresql://...` replays the
chain's certified blocks (`node/indexer_replica.py`, followed by `node/indexer_follow.py`) and writes here only
what the replay verified: each call of `add_blocks` writes a run of verified blocks, their trades and fills and
the height reached, in one transaction, so a kill -9 loses at most the run being written, and the next start
writes only blocks past the highest one held. Rows are keyed by their id (a trade by its trade id, a fill by
trade and role, a block by height), and a row already held is left as it is, so nothing is written twice.

Schema (`SCHEMA`): `trades` one row per trade, `fills` one row per account in a trade (maker and taker),
`blocks` one row per verified block (its id, block time and trade count), `meta` the chain id the database
follows (a database is never filled from two chains), `replica` the replay's newest snapshot (where a restart
resumes). Indexes serve a market's trades by time and an account's
fills by time. Retention: everything is kept; a network's full history is the operator's disk to size (about
300 bytes per trade with its two fills, 100 per block).

SQLite (the standard library's `sqlite3`, a file, nothing to install) by default; PostgreSQL (psycopg) when given a
`postgresql://` URL, for a network's full history: the same tables, the same statements.
"""
from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence

from node.indexer_replica import VerifiedBlock

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS trades (
    id TEXT PRIMARY KEY, market TEXT NOT NULL, price TEXT NOT NULL, qty TEXT NOT NULL,
    maker_order_id TEXT NOT NULL, taker_order_id TEXT NOT NULL, taker_side TEXT NOT NULL,
    maker_account TEXT NOT NULL, taker_account TEXT NOT NULL, height BIGINT NOT NULL, time_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL UNIQUE)""",
    "CREATE INDEX IF NOT EXISTS trades_by_time ON trades (market, time_ms)",
    """CREATE TABLE IF NOT EXISTS fills (
    trade_id TEXT NOT NULL REFERENCES trades (id), role TEXT NOT NULL, account TEXT NOT NULL, market TEXT NOT NULL,
    order_id TEXT NOT NULL, side TEXT NOT NULL, price TEXT NOT NULL, qty TEXT NOT NULL, height BIGINT NOT NULL,
    time_ms BIGINT NOT NULL, PRIMARY KEY (trade_id, role))""",
    "CREATE INDEX IF NOT EXISTS fills_by_account ON fills (account, time_ms)",
    """CREATE TABLE IF NOT EXISTS blocks (
    height BIGINT PRIMARY KEY, block_id TEXT NOT NULL, time_ms BIGINT NOT NULL, trades INTEGER NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS replica (id INTEGER PRIMARY KEY CHECK (id = 1), height BIGINT NOT NULL, data BYTEA NOT NULL)",
)


def sqlite_path(url: str) -> Path:
    """`sqlite:///PATH` (or a bare path) as the path, as SQLAlchemy reads it: `sqlite:///history.db` is relative,
    `sqlite:////var/lib/history.db` absolute; ValueError for another scheme."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        raise ValueError(f"{url!r}: give sqlite:///PATH or postgresql://...")
    return Path(url)


def open_store(url: str, *, shared: bool = False) -> HistoryStore:
    """The store a `--db` URL names: `postgresql://...` (or `postgres://`), else a SQLite file (`sqlite_path`);
    `shared`: used from more than one thread, one at a time (the caller serialises)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresHistoryStore(url)
    return HistoryStore(sqlite_path(url), shared=shared)


class HistoryStore:
    """The database: verified blocks in, trades, fills and candles out. SQLite here; `PostgresHistoryStore` below."""

    BEGIN = "BEGIN IMMEDIATE"       # SQLite: take the write lock at once, so the run's reads see the last commit

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        # transactions are explicit (BEGIN / COMMIT)
        self.db: Any = sqlite3.connect(path, isolation_level=None, check_same_thread=not shared)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._schema()

    def _schema(self) -> None:
        for statement in SCHEMA:
            self.db.execute(statement)

    def _sql(self, statement: str) -> str:
        """A statement with `?` parameters, as this database writes them."""
        return statement

    def query(self, statement: str, params: tuple[object, ...] = ()) -> Any:  # Any: the driver's cursor
        return self.db.execute(self._sql(statement), params)

    def many(self, statement: str, rows: list[tuple[object, ...]]) -> int:
        """One statement over many rows (one round trip where the driver can); the rows it changed."""
        return int(self.db.executemany(self._sql(statement), rows).rowcount)

    def close(self) -> None:
        self.db.close()

    def chain_id(self) -> str | None:
        row = self.query("SELECT value FROM meta WHERE key = 'chain_id'").fetchone()
        return None if row is None else str(row[0])

    def claim(self, chain_id: str) -> None:
        """Bind this database to `chain_id`; ValueError if it already holds another chain's history."""
        held = self.chain_id()
        if held is None:
            self.query("INSERT INTO meta VALUES ('chain_id', ?) ON CONFLICT (key) DO NOTHING", (chain_id,))
            held = self.chain_id()
        if held != chain_id:
            raise ValueError(f"this database holds the history of chain {str(held)[:16]}, not of {chain_id[:16]}")

    def progress(self) -> tuple[int, str] | None:
        """The highest block written and its id, or None."""
        row = self.query("SELECT height, block_id FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def block_id(self, height: int) -> str | None:
        row = self.query("SELECT block_id FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else str(row[0])

    def snapshot(self) -> tuple[int, bytes] | None:
        """The replica's newest snapshot kept here (height, bytes), or None."""
        row = self.query("SELECT height, data FROM replica WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def add_blocks(self, blocks: Sequence[VerifiedBlock], snapshot: tuple[int, bytes] | None = None) -> int:
        """Write verified blocks (oldest first) with their trades and fills, and the replica's snapshot when given
        (of a height written), all or nothing; the count of trades that were new."""
        if not blocks and snapshot is None:
            return 0
        run = self.query
        trades = [trade for block in blocks for trade in block.trades]
        run(self.BEGIN)
        try:
            seq = run("SELECT COALESCE(MAX(seq), 0) FROM trades").fetchone()[0]
            added = self.many(
                "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [(trade["id"], trade["market"], trade["price"], trade["qty"], trade["maker_order_id"],
                  trade["taker_order_id"], trade["taker_side"], trade["maker_account"], trade["taker_account"],
                  trade["height"], trade["time_ms"], seq + n) for n, trade in enumerate(trades, 1)]) if trades else 0
            if trades:
                self.many("INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trade_id, role) "
                          "DO NOTHING", [fill for trade in trades for fill in _fills(trade)])
            if blocks:
                self.many("INSERT INTO blocks VALUES (?, ?, ?, ?) ON CONFLICT (height) DO NOTHING",
                          [(block.height, block.block_id, block.time_ms, len(block.trades)) for block in blocks])
            if snapshot is not None:
                run("INSERT INTO replica VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET height = excluded.height, "
                    "data = excluded.data", snapshot)
            run("COMMIT")
        except BaseException:
            run("ROLLBACK")
            raise
        return added

    def trades(self, market: str) -> list[dict[str, object]]:
        rows = self.query("SELECT id, price, qty, maker_order_id, taker_order_id, taker_side, maker_account, "
                         "taker_account, height, time_ms FROM trades WHERE market = ? ORDER BY seq", (market,))
        keys = ("id", "price", "qty", "maker_order_id", "taker_order_id", "taker_side", "maker_account",
                "taker_account", "height", "time_ms")
        return [dict(zip(keys, row)) for row in rows]

    def fills(self, account: str) -> list[dict[str, object]]:
        rows = self.query("SELECT f.trade_id, f.role, f.market, f.order_id, f.side, f.price, f.qty, f.height, "
                         "f.time_ms FROM fills f JOIN trades t ON t.id = f.trade_id WHERE f.account = ? "
                         "ORDER BY t.seq, f.role", (account,))
        keys = ("trade_id", "role", "market", "order_id", "side", "price", "qty", "height", "time_ms")
        return [dict(zip(keys, row)) for row in rows]

    def candles(self, market: str, interval_ms: int) -> list[dict[str, object]]:
        """OHLCV per interval from the stored trades (Decimal arithmetic on the node's decimal strings)."""
        built: list[tuple[int, list[Decimal]]] = []      # (open time, [open, high, low, close, volume, quote, count])
        for price_text, qty_text, at in self.query(
                "SELECT price, qty, time_ms FROM trades WHERE market = ? ORDER BY seq", (market,)):
            price, qty, opens = Decimal(price_text), Decimal(qty_text), at - at % interval_ms
            if built and built[-1][0] == opens:
                candle = built[-1][1]
                candle[1], candle[2], candle[3] = max(candle[1], price), min(candle[2], price), price
                candle[4] += qty
                candle[5] += price * qty
                candle[6] += 1
            else:
                built.append((opens, [price, price, price, price, qty, price * qty, Decimal(1)]))
        names = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
        return [{"t": opens, **dict(zip(names, values))} for opens, values in built]


class PostgresHistoryStore(HistoryStore):
    """The same tables in PostgreSQL (psycopg, autocommit: each run's BEGIN and COMMIT are the store's own)."""

    BEGIN = "BEGIN ISOLATION LEVEL SERIALIZABLE"

    def __init__(self, url: str) -> None:    # the HistoryStore constructor opens SQLite: not called
        import psycopg     # only the PostgreSQL path needs the driver

        self.db = psycopg.connect(url, autocommit=True)
        self._schema()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def many(self, statement: str, rows: list[tuple[object, ...]]) -> int:
        with self.db.cursor() as cursor:       # psycopg pipelines executemany: one round trip, rowcount summed
            cursor.executemany(self._sql(statement), rows)
            return int(cursor.rowcount)


def _fills(trade: Mapping[str, object]) -> list[tuple[object, ...]]:
    taker_side = trade["taker_side"]
    maker_side = "sell" if taker_side == "buy" else "buy"
    market = trade["market"]
    return [(trade["id"], "maker", trade["maker_account"], market, trade["maker_order_id"], maker_side,
             trade["price"], trade["qty"], trade["height"], trade["time_ms"]),
            (trade["id"], "taker", trade["taker_account"], market, trade["taker_order_id"], taker_side,
             trade["price"], trade["qty"], trade["height"], trade["time_ms"])]
