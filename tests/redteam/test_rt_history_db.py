"""Red team: the history database's one worker thread (`HISTORY_DB`, node/history_db.py), asked through the public
history routes.

Three findings, each against the route the public calls (`GET /candles/{market}`), the database replaced by a
store that spends CPU on every query as a slow read does:
- one address's many candle reads at once queued on the single worker, and another address's read waited behind
  all of them (no bound per address or in all on the worker's queue);
- the worker's CPU was charged to nobody: the public rate counts the event loop's thread only, so a day of candles
  (about a second of SQL and parsing) cost its asker one unit;
- candles with no `from`/`to` read every stored trade of the market into memory at once: the whole history.
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from exchange.app import ExchangeParams, ExchangeState
from node.api import history as history_api
from node.api.base import NODE_KEY, ApiError
from node.api.rate import OFF_LOOP_CPU
from node.history_db import HISTORY_DB, DbHistory
from tests.unit.node.test_history_db import Window

SPIN = 0.02              # CPU seconds of each query


def _spin(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


class _Cursor:
    def __init__(self, rows: Iterator[tuple[object, ...]], one: tuple[object, ...] | None) -> None:
        self.rows, self.one = rows, one

    def fetchone(self) -> tuple[object, ...] | None:
        return self.one

    def __iter__(self) -> Iterator[tuple[object, ...]]:
        return self.rows


class SlowStore:
    """A database of `trades` trades of one market at a block each second, every query spending SPIN of CPU; counts
    the trade rows it handed out."""

    def __init__(self, trades: int) -> None:
        self.trades = trades
        self.handed = 0

    def _rows(self, limit: int | None, newest_first: bool) -> Iterator[tuple[object, ...]]:
        count = self.trades if limit is None else min(limit, self.trades)
        for n in (range(self.trades - 1, self.trades - 1 - count, -1) if newest_first else range(count)):
            self.handed += 1
            yield (f"t{n}", "100.00", "0.0100", f"m{n}", f"k{n}", "buy", "a" * 64, "b" * 64, n + 1, 1_000 * (n + 1))

    def query(self, statement: str, params: tuple[object, ...] = ()) -> _Cursor:
        _spin(SPIN)
        if statement.startswith("SELECT height, time_ms FROM blocks"):
            return _Cursor(iter(()), (self.trades, 1_000 * self.trades))
        limit = int(statement.rsplit("LIMIT", 1)[1]) if "LIMIT" in statement else None
        return _Cursor(self._rows(limit, "ORDER BY seq DESC" in statement), None)

    def close(self) -> None:
        pass


class _Reads(Window):
    def finality(self) -> SimpleNamespace:
        return SimpleNamespace(fields=lambda: {})


def _app(store: SlowStore) -> tuple[web.Application, DbHistory]:
    app = web.Application()
    history = DbHistory(lambda: store)  # type: ignore[arg-type, return-value]
    app[HISTORY_DB] = history
    app[NODE_KEY] = SimpleNamespace(chain_reads=_Reads(ExchangeState(ExchangeParams("BTC-USD"), "c" * 64)))
    return app, history


def _request(app: web.Application, address: str, query: str = "interval=1m&from=0&to=60000") -> web.Request:
    transport: Any = SimpleNamespace(get_extra_info=lambda name, default=None: (address, 40000)
                                     if name == "peername" else default, is_closing=lambda: False)
    return make_mocked_request("GET", f"/candles/BTC-USD?{query}", app=app, match_info={"market": "BTC-USD"},
                               transport=transport)


async def _timed(app: web.Application, address: str) -> tuple[float, int]:
    started = time.monotonic()
    try:
        await history_api.get_candles(_request(app, address))
        status = 200
    except ApiError as exc:
        status = exc.status
    return time.monotonic() - started, status


def test_one_address_cannot_queue_the_worker_ahead_of_everyone() -> None:
    app, history = _app(SlowStore(50))

    async def run() -> tuple[float, list[tuple[float, int]], tuple[float, int]]:
        alone = min([(await _timed(app, "10.2.2.2"))[0] for _ in range(3)])
        flood = [asyncio.ensure_future(_timed(app, "10.1.1.1")) for _ in range(30)]
        await asyncio.sleep(0)
        honest = await _timed(app, "10.2.2.2")
        return alone, await asyncio.gather(*flood), honest

    try:
        alone, flood, (honest_wait, honest_status) = asyncio.run(run())
    finally:
        history.close()
    assert honest_status == 200
    # behind 30 reads of one address the honest read waited 31 reads' time (3.2 s against 0.09 s alone, at load 3 on
    # 2 cores); with the flood bounded per address, it waits behind at most MAX_READS_PER_ADDRESS of them
    assert honest_wait < 6 * alone, f"the honest read waited {honest_wait:.2f} s behind one address's flood " \
                                    f"against {alone:.2f} s alone"
    refused = [status for _, status in flood if status != 200]
    assert refused and set(refused) == {429}


def test_the_workers_cpu_is_charged_to_the_asker() -> None:
    app, history = _app(SlowStore(50))

    async def run() -> float:
        cell = [0.0]
        OFF_LOOP_CPU.set(cell)              # as the public rate's middleware does for each request
        await history_api.get_candles(_request(app, "10.3.3.3"))
        return cell[0]

    try:
        charged = asyncio.run(run())
    finally:
        history.close()
    assert charged >= 2 * SPIN * 0.9, f"only {charged:.3f} s of the worker's {2 * SPIN:.3f} s was charged"


def test_candles_over_the_whole_history_are_refused_not_read_into_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import node.history_db as history_db

    store = SlowStore(300_000)
    app, history = _app(store)
    try:
        with pytest.raises(ApiError) as refused:
            asyncio.run(history_api.get_candles(_request(app, "10.4.4.4", "interval=1d")))
    finally:
        history.close()
    assert refused.value.status == 400 and refused.value.code == "range_too_large"
    assert store.handed <= history_db.MAX_CANDLE_ROWS + 1


def test_the_streams_candle_snapshot_reads_a_bounded_number_of_trades_on_the_loop() -> None:
    """The market-data stream's candle snapshot (every `candles` subscription, no token) reads the database on the
    event loop, over the last 500 intervals: for `1d` that is 500 days, every trade of them turned into rows on the
    loop (a day at a trade a second is about a second of it), so one subscription stalled the whole node, chain
    included, for as long as that took (`bench indexer`: a day of SQLite rows p99 1.6 s; here 300,000 rows of a
    store cheaper than SQLite took 0.77 s of the loop against 0.18 s bounded, load 14 on 2 cores). It now reads the
    newest STREAM_CANDLE_ROWS trades at most."""
    import node.history_db as history_db

    store = SlowStore(300_000)              # 300,000 trades, one a second: about 3.5 days
    history = DbHistory(lambda: store)  # type: ignore[arg-type, return-value]
    kept = _Reads(ExchangeState(ExchangeParams("BTC-USD"), "c" * 64))
    try:
        candles = history.candles_now(kept, "BTC-USD", 86_400_000, None)
    finally:
        history.close()
    assert store.handed <= history_db.STREAM_CANDLE_ROWS, f"{store.handed:,} trades read on the loop"
    # the newest trades: the snapshot ends at the newest trade's day, with its trades read
    newest_day = 1_000 * 300_000 // 86_400_000 * 86_400_000
    assert candles and candles[-1]["t"] == newest_day and candles[-1]["close"] == "100.00"
    assert sum(int(str(c["trades"])) for c in candles) == history_db.STREAM_CANDLE_ROWS
