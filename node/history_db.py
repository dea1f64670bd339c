"""History answers from the indexer's database (`HISTORY_DB`): trades by block time, an account's fills, candles.

The node's state keeps only its recent trades (`trade_history` per market); the indexer (`exchange-node indexer`,
node/indexer.py) holds the verified rest. An answer joins the two at the database's last block H: the database's
trades up to H, then the node's kept trades with a block time after H's. Both sides go through the state's own
page and candle functions (`exchange/app/candles.py`) and trade view, so an answer equals what a node keeping
every trade would give. A node whose kept window no longer reaches back to H (an indexer more than the window
behind) answers without the trades in between, and logs a warning saying so. A database that cannot be read is
logged as an error and its routes answer 503 `history_db_unavailable`; the stream's candles fall back to the kept
trades meanwhile.

The routes read the database on one worker thread of its own (a day of 1-minute candles is about a second of SQL
and parsing: not on the event loop), the stream's few newest candles on the loop, each thread with a connection
of its own; the node's kept trades are read on the loop, and the database only up to the H read first, so a
block the indexer writes meanwhile is neither missed nor counted twice. The worker's queue is shared out (a few
reads per address and per network, a bound in all) and its CPU is charged to the asker's public rate with the
loop's (`OFF_LOOP_CPU`), so one address cannot queue everyone's reads behind its own for the price of a unit each;
candles read at most MAX_CANDLE_ROWS stored trades (a longer range is refused, never read whole into memory).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from typing import Callable, Iterator, Protocol, TypeVar

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exchange.app.candles import CursorExpired, candles
from exchange.app.history import TradeRow
from exchange.app.views import View, trade_view
from exchange.markets import Market, MarketRegistry
from node.api.base import ApiError
from node.api.rate import OFF_LOOP_CPU, awaited
from node.indexer import HistoryStore
from p2p.public.sources import subnet_of

log = logging.getLogger("exchange_node.history_db")
T = TypeVar("T")
TAIL_PAGE = 10_000
MAX_READS_PER_ADDRESS = 2       # reads queued or running on the worker, from one address ...
MAX_READS_PER_SUBNET = 4        # ... from one /24 (IPv4) or /48 (IPv6) ...
MAX_READS = 16                  # ... and in all: one day of candles is about a second of the worker
MAX_CANDLE_ROWS = 100_000       # trades one candles answer reads from the database (a day at one a second)
STREAM_CANDLE_ROWS = 20_000     # trades the stream's candle snapshot reads, on the event loop: the newest
COLUMNS = "id, price, qty, maker_order_id, taker_order_id, taker_side, maker_account, taker_account, height, time_ms"


class HistoryUnavailable(Exception):
    """The database could not be read (gone, locked, a server down): the route answers 503 and says why."""


class KeptTrades(Protocol):
    """What the node's state answers of its kept trades (the API's read port has these)."""

    def markets(self) -> MarketRegistry: ...
    def trades_between(self, market: str, start_ms: int | None, end_ms: int | None, cursor: str | None,
                       limit: int, account: str | None) -> tuple[list[View], str | None]: ...


def row_of(market: Market, values: tuple[object, ...] | View, units: dict[tuple[str, object], int] | None = None
           ) -> TradeRow:
    """A stored trade (its columns, or its view) as the state keeps it: price in ticks, quantity in lots;
    `units` remembers the texts already parsed (a market's prices and sizes repeat)."""
    if isinstance(values, dict):
        values = tuple(values[k] for k in COLUMNS.split(", "))
    trade_id, price, qty, maker, taker, side, maker_account, taker_account, height, time_ms = values
    if units is None:
        units = {}
    known_ticks, known_lots = units.get(("p", price)), units.get(("q", qty))
    ticks = units.setdefault(("p", price), market.parse_price(price)) if known_ticks is None else known_ticks
    lots = units.setdefault(("q", qty), market.parse_qty(qty)) if known_lots is None else known_lots
    return (str(trade_id), ticks, lots, str(maker), str(taker), str(side), str(maker_account), str(taker_account),
            _int(height), _int(time_ms))


def _int(value: object) -> int:
    return value if isinstance(value, int) else int(str(value))


class DbHistory:
    """The indexer's database, read-only, joined with the node's kept trades."""

    def __init__(self, open_store: Callable[[], HistoryStore]) -> None:
        self._open = open_store
        self._local = threading.local()        # one connection per thread: the worker's, and the loop's for the stream
        self._opened: list[HistoryStore] = []
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="history-db")
        self._warned = float("-inf")            # when a kept window short of the database was last logged
        self.failures = 0                       # reads that failed (for /metrics)
        self.behind = 0                         # answers given while the kept window fell short of the database
        self.height = 0                         # the database's newest block, as last read
        self._queued: Counter[str] = Counter()  # reads on the worker's queue by address and by network
        self._queued_total = 0

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        for store in self._opened:
            store.close()

    def _db(self) -> HistoryStore:
        store: HistoryStore | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._open()
            self._opened.append(store)
        return store

    @contextlib.contextmanager
    def _turn(self, address: str) -> Iterator[None]:
        """A read's place on the worker's queue: one address or network cannot queue everyone's history reads
        behind its own."""
        network = "net:" + subnet_of(address)
        if self._queued_total >= MAX_READS:
            raise ApiError(503, "history_busy", "too many history reads are waiting for the database now",
                           retry_after=1.0)
        if self._queued[address] >= MAX_READS_PER_ADDRESS or self._queued[network] >= MAX_READS_PER_SUBNET:
            raise ApiError(429, "history_rate", f"at most {MAX_READS_PER_ADDRESS} history reads of the database at "
                                                f"once per address, {MAX_READS_PER_SUBNET} per network",
                           retry_after=1.0)
        self._queued[address] += 1
        self._queued[network] += 1
        self._queued_total += 1
        try:
            yield
        finally:
            self._queued_total -= 1
            for key in (address, network):
                self._queued[key] -= 1
                if not self._queued[key]:
                    del self._queued[key]

    async def _run(self, job: Callable[[], T]) -> T:
        """`job` on the worker; its CPU is charged with the asking request's (`OFF_LOOP_CPU`), the loop's meanwhile
        is not."""
        value, spent = await awaited(asyncio.get_running_loop().run_in_executor(self._worker, self._timed, job))
        charged = OFF_LOOP_CPU.get()
        if charged is not None:
            charged[0] += spent
        return value

    def _timed(self, job: Callable[[], T]) -> tuple[T, float]:
        started = time.thread_time()
        return self._guarded(job), time.thread_time() - started

    def _guarded(self, job: Callable[[], T]) -> T:
        try:
            return job()
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises: the caller is told, loudly
            self.failures += 1
            log.error("the history database cannot be read: %s", exc)
            store: HistoryStore | None = getattr(self._local, "store", None)
            self._local.store = None                 # opened again at the next read (a file back, a server back)
            if store is not None:
                self._opened.remove(store)
                try:
                    store.close()
                except Exception:  # noqa: BLE001 - a connection already broken: nothing more to close
                    pass
            raise HistoryUnavailable(str(exc)) from None

    # --- the database side (on the thread that asks) ----------------------------------------------------------------
    def mark(self) -> tuple[int, int]:
        """(height, block time) of the newest block the database holds; (0, -1) when it holds none."""
        row = self._db().query("SELECT height, time_ms FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        self.height = 0 if row is None else int(row[0])
        return (0, -1) if row is None else (int(row[0]), int(row[1]))

    def seq_of(self, trade_id: str) -> int | None:
        row = self._db().query("SELECT seq FROM trades WHERE id = ?", (trade_id,)).fetchone()
        return None if row is None else int(row[0])

    def rows(self, market: Market, upto: int, start_ms: int | None, end_ms: int | None, after_seq: int | None,
             account: str | None, limit: int | None, newest: bool = False) -> list[TradeRow]:
        """The market's stored trades at heights up to `upto` in [start, end), after `after_seq`, oldest first (the
        newest `limit` of them with `newest`)."""
        where, params = ["market = ?", "height <= ?"], [market.symbol, upto]
        for clause, value in (("time_ms >= ?", start_ms), ("time_ms < ?", end_ms), ("seq > ?", after_seq)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if account is not None:
            where.append("id IN (SELECT trade_id FROM fills WHERE account = ? AND market = ?)")
            params += [account, market.symbol]
        statement = f"SELECT {COLUMNS} FROM trades WHERE {' AND '.join(where)} ORDER BY seq{' DESC' if newest else ''}"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        prices: dict[str, int] = {}         # per query: a market's texts, parsed once each
        sizes: dict[str, int] = {}
        rows: list[TradeRow] = []
        for trade_id, price, qty, maker, taker, side, maker_account, taker_account, height, time_ms in \
                self._db().query(statement, tuple(params)):
            ticks = prices.get(price)
            if ticks is None:
                ticks = prices[price] = market.parse_price(price)
            lots = sizes.get(qty)
            if lots is None:
                lots = sizes[qty] = market.parse_qty(qty)
            rows.append((trade_id, ticks, lots, maker, taker, side, maker_account, taker_account, int(height),
                         int(time_ms)))
        if newest:
            rows.reverse()
        return rows

    def metrics(self) -> Iterator[Metric]:
        """For /metrics: how far the database reaches and what went wrong reading it."""
        yield GaugeMetricFamily("exchange_node_history_db_height", "The history database's newest block, as last "
                                "read (HISTORY_DB)", value=self.height)
        yield CounterMetricFamily("exchange_node_history_db_failures_total", "Reads of the history database that "
                                  "failed (answered 503 history_db_unavailable)", value=self.failures)
        yield CounterMetricFamily("exchange_node_history_db_short_window_total", "History answers given while this "
                                  "node's kept trades did not reach back to the database's newest block",
                                  value=self.behind)

    # --- answers --------------------------------------------------------------------------------------------
    def _reaches(self, kept: KeptTrades, market: str, height: int, time_ms: int) -> None:
        """Say (at most once a minute) when the node's kept trades no longer reach back to the database's newest
        block: trades between the two may be missing from the answers."""
        if time_ms < 0:
            return
        oldest, _ = kept.trades_between(market, None, None, None, 1, None)
        if not oldest or _int(oldest[0]["time_ms"]) <= time_ms:
            return
        self.behind += 1
        if time.monotonic() - self._warned > 60:
            self._warned = time.monotonic()
            log.warning("the history database ends at height %d but this node keeps %s trades only from height %s: "
                        "the indexer is further behind than the kept window, answers may miss trades in between",
                        height, market, oldest[0]["height"])

    async def trades_between(self, kept: KeptTrades, market: str, start_ms: int | None, end_ms: int | None,
                             cursor: str | None, limit: int, account: str | None, address: str = ""
                             ) -> tuple[list[View], str | None]:
        """As the state's `trades_between`, over the database's trades then the node's kept ones; `address` asks."""
        with self._turn(address):
            return await self._trades_between(kept, market, start_ms, end_ms, cursor, limit, account)

    async def _trades_between(self, kept: KeptTrades, market: str, start_ms: int | None, end_ms: int | None,
                              cursor: str | None, limit: int, account: str | None) -> tuple[list[View], str | None]:
        venue = kept.markets().get(market)
        (height, time_ms), after = await self._run(lambda: (self.mark(), self.seq_of(cursor) if cursor else None))
        self._reaches(kept, market, height, time_ms)
        if cursor is not None and after is None:        # past the database: the kept trades continue the page
            return kept.trades_between(market, _later(start_ms, time_ms), end_ms, cursor, limit, account)
        stored = await self._run(lambda: self.rows(venue, height, start_ms, end_ms, after, account, limit + 1))
        if len(stored) > limit:
            return [trade_view(row, venue) for row in stored[:limit]], stored[limit - 1][0]
        views = [trade_view(row, venue) for row in stored]
        room = limit - len(views)
        tail, more = kept.trades_between(market, _later(start_ms, time_ms), end_ms, None, room + 1, account)
        views += tail[:room]
        return views, (views[-1]["id"] if views and (len(tail) > room or more is not None) else None)

    async def candles(self, kept: KeptTrades, market: str, interval_ms: int, start_ms: int | None,
                      end_ms: int | None, address: str = "") -> list[View]:
        """As the state's `candles`, over the database's trades then the node's kept ones; `address` asks. A range
        holding more than MAX_CANDLE_ROWS stored trades is refused (400 `range_too_large`), not read into memory."""
        venue = kept.markets().get(market)
        with self._turn(address):
            height, time_ms = await self._run(self.mark)
            self._reaches(kept, market, height, time_ms)
            tail = _kept_rows(kept, venue, _later(start_ms, time_ms), end_ms)
            stored = await self._run(lambda: self.rows(venue, height, start_ms, end_ms, None, None, MAX_CANDLE_ROWS + 1))
        if len(stored) > MAX_CANDLE_ROWS:
            raise ApiError(400, "range_too_large", f"more than {MAX_CANDLE_ROWS} trades fall in this range: ask for "
                                                   f"candles over a shorter from/to")
        return candles([*stored, *tail], interval_ms, start_ms, end_ms, venue)

    def candles_now(self, kept: KeptTrades, market: str, interval_ms: int, start_ms: int | None,
                    recent: int = 500) -> list[View]:
        """`candles` for the market-data stream, on the calling thread; with no `start_ms`, those of the `recent`
        intervals up to the database's newest block (the stream's snapshot, not the whole history), of at most the
        newest STREAM_CANDLE_ROWS stored trades (the calling thread is the event loop: a `1d` snapshot's 500 days
        read whole would hold the node); the oldest candle may then be partial, as a node without the database
        shows its kept trades' oldest."""
        venue = kept.markets().get(market)
        height, time_ms = self._guarded(self.mark)
        if start_ms is None and time_ms >= 0:
            start_ms = max(0, time_ms - time_ms % interval_ms - (recent - 1) * interval_ms)
        tail = _kept_rows(kept, venue, _later(start_ms, time_ms), None)
        stored = self._guarded(lambda: self.rows(venue, height, start_ms, None, None, None, STREAM_CANDLE_ROWS,
                                                 newest=True))
        return candles([*stored, *tail], interval_ms, start_ms, None, venue)


HISTORY_DB = web.AppKey("history_db", DbHistory)     # set on the API's app when HISTORY_DB is configured


def open_history(url: str | None) -> DbHistory | None:
    """The history database a `HISTORY_DB` URL names (opened at its first read), or None when unset."""
    if url is None:
        return None
    from node.indexer import open_store

    history = DbHistory(lambda: open_store(url, shared=True))
    return history


def install_history_db(history: DbHistory) -> Callable[[web.Application], None]:
    """The API extension that hands the history routes `history`."""
    def install(app: web.Application) -> None:
        app[HISTORY_DB] = history
    return install


def _later(start_ms: int | None, db_time_ms: int) -> int | None:
    """The kept trades to join: those after the database's newest block (and from `start_ms`)."""
    if db_time_ms < 0:
        return start_ms
    return db_time_ms + 1 if start_ms is None else max(start_ms, db_time_ms + 1)


def _kept_rows(kept: KeptTrades, market: Market, start_ms: int | None, end_ms: int | None) -> list[TradeRow]:
    rows: list[TradeRow] = []
    cursor: str | None = None
    while True:
        try:
            views, cursor = kept.trades_between(market.symbol, start_ms, end_ms, cursor, TAIL_PAGE, None)
        except CursorExpired:          # the window moved while we paged: what we have is what is kept
            return rows
        rows += [row_of(market, view) for view in views]
        if cursor is None:
            return rows

