"""The history indexer: a node's final trades and fills copied into SQLite, resumable after a crash.

`exchange-node indexer --node API_URL --db sqlite:///PATH | postgresql://...` pages through every market's trades by
block time
(`GET /trades/{market}?from=&cursor=`: only what final blocks hold), and writes each page, with where it got to,
in one transaction: a kill -9 loses at most the page being written, and the next start continues after
the last page committed. Rows are keyed by their id (a trade by its trade id, a fill by trade and side), and a
row already held is left as it is, so a page read twice never writes a row twice.

Schema (`SCHEMA`): `trades` one row per trade, `fills` one row per account in a trade (maker and taker),
`cursors` per market the last trade written. Indexes serve a market's trades by time and an account's fills by
time. Retention: everything is kept; a network's full history is the operator's disk to size (about 300 bytes
per trade with its two fills). The node keeps only its recent trades (`trade_history`): an indexer stopped
longer than that window takes to fill loses the trades in between, and says so (`gap`) rather than hiding it.

SQLite (the standard library's `sqlite3`, a file, nothing to install) by default; PostgreSQL (psycopg) when given a
`postgresql://` URL, for a network's full history: the same tables, the same statements. What it does not do:
verify the blocks' certificates itself (it trusts the node it is pointed at, as a client of that node's API does).
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import urlencode

log = logging.getLogger("exchange_node.indexer")

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
    "CREATE TABLE IF NOT EXISTS cursors (market TEXT PRIMARY KEY, trade_id TEXT NOT NULL, time_ms BIGINT NOT NULL)",
)
PAGE = 1000


class TradesSource(Protocol):
    """Where the trades come from: a node's API (`NodeTrades`), or a test's fake."""

    def markets(self) -> list[str]: ...
    def page(self, market: str, start_ms: int, cursor: str | None) -> tuple[list[dict[str, object]], str | None]: ...


class CursorGone(Exception):
    """The trade a cursor continues from has left the node's kept history."""


def sqlite_path(url: str) -> Path:
    """`sqlite:///PATH` (or a bare path) as the path, as SQLAlchemy reads it: `sqlite:///history.db` is relative,
    `sqlite:////var/lib/history.db` absolute; ValueError for another scheme."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        raise ValueError(f"{url!r}: give sqlite:///PATH or postgresql://...")
    return Path(url)


def open_store(url: str) -> HistoryStore:
    """The store a `--db` URL names: `postgresql://...` (or `postgres://`), else a SQLite file (`sqlite_path`)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresHistoryStore(url)
    return HistoryStore(sqlite_path(url))


class HistoryStore:
    """The database: pages in, trades, fills and candles out. SQLite here; `PostgresHistoryStore` below."""

    BEGIN = "BEGIN IMMEDIATE"       # SQLite: take the write lock at once, so the page's reads see the last commit

    def __init__(self, path: Path) -> None:
        self.db: Any = sqlite3.connect(path, isolation_level=None)     # transactions are explicit (BEGIN / COMMIT)
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

    def cursor(self, market: str) -> tuple[str, int] | None:
        row = self.query("SELECT trade_id, time_ms FROM cursors WHERE market = ?", (market,)).fetchone()
        return None if row is None else (row[0], row[1])

    def add_page(self, market: str, trades: list[dict[str, object]]) -> int:
        """Write a page of the node's trades (oldest first) and the cursor after it, all or nothing; the count of
        trades that were new."""
        if not trades:
            return 0
        run = self.query
        run(self.BEGIN)
        try:
            seq = run("SELECT COALESCE(MAX(seq), 0) FROM trades").fetchone()[0]
            added = self.many(
                "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [(trade["id"], market, trade["price"], trade["qty"], trade["maker_order_id"], trade["taker_order_id"],
                  trade["taker_side"], trade["maker_account"], trade["taker_account"], trade["height"],
                  trade["time_ms"], seq + n) for n, trade in enumerate(trades, 1)])
            self.many("INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trade_id, role) DO NOTHING",
                      [fill for trade in trades for fill in _fills(market, trade)])
            last = trades[-1]
            run("INSERT INTO cursors VALUES (?, ?, ?) ON CONFLICT (market) DO UPDATE SET trade_id = excluded.trade_id, "
                "time_ms = excluded.time_ms WHERE cursors.time_ms <= excluded.time_ms",   # never back to older trades
                (market, last["id"], last["time_ms"]))
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
    """The same tables in PostgreSQL (psycopg, autocommit: each page's BEGIN and COMMIT are the store's own)."""

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


def _fills(market: str, trade: dict[str, object]) -> list[tuple[object, ...]]:
    taker_side = trade["taker_side"]
    maker_side = "sell" if taker_side == "buy" else "buy"
    common = (market,)
    return [(trade["id"], "maker", trade["maker_account"], *common, trade["maker_order_id"], maker_side,
             trade["price"], trade["qty"], trade["height"], trade["time_ms"]),
            (trade["id"], "taker", trade["taker_account"], *common, trade["taker_order_id"], taker_side,
             trade["price"], trade["qty"], trade["height"], trade["time_ms"])]


@dataclass
class NodeTrades:
    """A node's control API as a TradesSource (`call`: node/cli/client.py's, raising ApiFailure)."""

    url: str
    token: str | None
    call: Callable[..., tuple[int, object]]

    def markets(self) -> list[str]:
        _, status = self.call(self.url, "GET", "/status", token=self.token)
        return list(status["markets"])  # type: ignore[index]

    def page(self, market: str, start_ms: int, cursor: str | None) -> tuple[list[dict[str, object]], str | None]:
        from node.cli.client import ApiFailure

        query = urlencode({"from": start_ms, "limit": PAGE, **({"cursor": cursor} if cursor else {})})
        try:
            _, body = self.call(self.url, "GET", f"/trades/{market}?{query}", token=self.token)
        except ApiFailure as exc:
            if exc.status == 410:
                raise CursorGone(cursor) from None
            raise
        return body["trades"], body["next_cursor"]  # type: ignore[index]


def sync_market(store: HistoryStore, source: TradesSource, market: str) -> int:
    """Copy `market`'s trades the store lacks, page by page; how many were new."""
    added = 0
    while True:
        held = store.cursor(market)
        cursor, start = (None, 0) if held is None else held
        try:
            trades, _ = source.page(market, start, cursor)
        except CursorGone:
            log.warning("gap: the node no longer keeps the trades after %s in %s; resuming from block time %d "
                        "(trades in between are lost to this index)", cursor, market, start)
            trades, _ = source.page(market, start, None)
        added += store.add_page(market, trades)
        if len(trades) < PAGE:
            return added


def follow(store: HistoryStore, source: TradesSource, interval: float, running: Callable[[], bool]) -> None:
    """Index every market until `running()` says stop, polling every `interval` seconds."""
    markets = source.markets()
    while running():
        for market in markets:
            added = sync_market(store, source, market)
            if added:
                log.info("indexed %d trades of %s", added, market)
        time.sleep(interval)
