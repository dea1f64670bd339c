"""History answers from the indexer's database joined with the node's kept trades equal the state's own.

A chain built here is replayed into a database up to height H; the replay's state (every trade kept) is the
reference. Pages of trades and fills followed cursor by cursor, ranges and candles of every interval, read from the
database then the kept trades after H, equal the state's answers, also when the node keeps only the trades after
a height below H (a short window), and the stream's candles too.
"""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.candles import INTERVALS_MS, trades_between
from exchange.app.views import View, trade_view
from exchange.markets import MarketRegistry
from node.history_db import DbHistory, HistoryUnavailable
from node.indexer import HistoryStore
from node.indexer_follow import Follower
from tests.unit.node.test_indexer import MAKER, TAKER, Node, produce, run

BLOCKS = 40


class Window:
    """The node's kept trades: the state's, only from `first_height` on (a short `trade_history`)."""

    def __init__(self, state: ExchangeState, first_height: int = 0) -> None:
        self.state, self.first_height = state, first_height

    def markets(self) -> MarketRegistry:
        return self.state.params.registry

    def trades_between(self, market: str, start_ms: int | None, end_ms: int | None, cursor: str | None,
                       limit: int, account: str | None) -> tuple[list[View], str | None]:
        venue = self.state.venues[market]
        kept = [row for row in venue.trades if row[8] >= self.first_height]
        rows, after = trades_between(kept, start_ms, end_ms, cursor, limit, account)
        return [trade_view(row, venue.market) for row in rows], after


@pytest.fixture
def chain(tmp_path: Path):
    items, _ = produce(BLOCKS, every_ms=23_000)
    store = HistoryStore(tmp_path / "h.sqlite")
    follower = Follower(store, [Node("a", items)])
    run(follower, 8)
    lagging = sqlite3.connect(tmp_path / "lagging.sqlite")
    store.db.backup(lagging)                 # the database as an indexer 16 blocks behind holds it
    lagging.close()
    run(follower, 20)
    store.close()
    held = HistoryStore(tmp_path / "lagging.sqlite").progress()
    assert follower.replica is not None and held is not None and held[0] < BLOCKS - 10
    assert follower.replica.state.height == BLOCKS
    history = DbHistory(lambda: HistoryStore(tmp_path / "lagging.sqlite", shared=True))
    yield follower.replica.state.app, held[0], history
    history.close()


def pages(read, limit: int, **query) -> list[list[str]]:
    out, cursor = [], None
    while True:
        views, cursor = read(cursor, limit, **query)
        out.append([v["id"] for v in views])
        if cursor is None:
            return out


@pytest.mark.parametrize("short_window", [False, True])
def test_pages_fills_ranges_and_candles_equal_the_states(chain, short_window, caplog):
    state, held, history = chain
    kept = Window(state, held - 5 if short_window else 0)
    assert not short_window or len(kept.trades_between("BTC-USD", None, None, None, 10_000, None)[0]) < BLOCKS

    def joined(cursor, limit, start=None, end=None, account=None):
        return asyncio.run(history.trades_between(kept, "BTC-USD", start, end, cursor, limit, account))

    def own(cursor, limit, start=None, end=None, account=None):
        return state.trades_between("BTC-USD", start, end, cursor, limit, account)

    times = [t["time_ms"] for t in state.trades("BTC-USD")]
    for query in ({}, {"start": times[3]}, {"end": times[-4]}, {"start": times[5], "end": times[held + 2]},
                  {"account": MAKER.public_key.hex()}, {"account": TAKER.public_key.hex(), "start": times[2]}):
        for limit in (1, 3, 7, 1000):
            assert pages(joined, limit, **query) == pages(own, limit, **query), (query, limit)
    first = joined(None, 4)
    assert first[0] == state.trades_between("BTC-USD", None, None, None, 4, None)[0]      # the views, field by field
    for interval in INTERVALS_MS.values():
        for start, end in ((None, None), (times[4], None), (times[1], times[held + 3])):
            assert asyncio.run(history.candles(kept, "BTC-USD", interval, start, end)) == \
                state.candles("BTC-USD", interval, start, end), (interval, start, end)
        assert history.candles_now(kept, "BTC-USD", interval, times[-3]) == state.candles("BTC-USD", interval,
                                                                                         times[-3])
    assert "may miss trades" not in caplog.text


def test_a_kept_window_short_of_the_database_is_said(chain, caplog):
    state, held, history = chain
    kept = Window(state, held + 3)               # the indexer further behind than the node keeps
    trades, _ = asyncio.run(history.trades_between(kept, "BTC-USD", None, None, None, 1000, None))
    assert [t["height"] for t in trades] == [*range(1, held + 1), *range(held + 3, BLOCKS + 1)]
    assert f"the history database ends at height {held}" in caplog.text and "may miss trades" in caplog.text
    samples = {m.name: m.samples[0].value for m in history.metrics()}
    assert samples == {"exchange_node_history_db_height": held, "exchange_node_history_db_failures": 0,
                       "exchange_node_history_db_short_window": 1}


def test_a_database_that_cannot_be_read_is_unavailable_and_counted(tmp_path, caplog):
    def broken() -> HistoryStore:
        raise sqlite3.OperationalError("unable to open database file")

    history = DbHistory(broken)
    kept = Window(ExchangeState(ExchangeParams("BTC-USD"), "c" * 64))
    try:
        with pytest.raises(HistoryUnavailable):
            asyncio.run(history.candles(kept, "BTC-USD", 60_000, None, None))
        assert history.failures == 1 and "cannot be read: unable to open" in caplog.text
    finally:
        history.close()
