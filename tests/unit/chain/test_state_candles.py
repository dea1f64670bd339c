"""Trade history by block time: pages with cursors that neither skip nor repeat, fills of one account, and OHLCV
candles equal to a recomputation from the trades (Decimal, independently of the integer code)."""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.candles import INTERVALS_MS, CursorExpired
from tests.unit.chain.state_helpers import CHAIN, MARKETS, T0, Chain, Workload


@pytest.fixture(scope="module")
def traded() -> ExchangeState:
    chain = Chain(ExchangeState(ExchangeParams(MARKETS, order_ttl_ms=86_400_000), CHAIN))
    workload = Workload(seed=21, accounts=6, timers=False)
    workload.make.lifetime = 80_000_000                            # valid across the 7 minutes of blocks
    for index, block in enumerate(workload.blocks(1_200, per_block=20)):
        chain.block(block, time_ms=T0 + index * 7_000)            # 60 blocks over 7 minutes
    return chain.state


def test_pages_cover_a_range_exactly_once(traded):
    everything = traded.trades("BTC-USD", 100_000)
    assert len(everything) > 200
    start, end = T0 + 60_000, T0 + 300_000
    expected = [t["id"] for t in everything if start <= t["time_ms"] < end]
    paged, cursor = [], None
    while True:
        page, cursor = traded.trades_between("BTC-USD", start, end, cursor, 37)
        assert len(page) <= 37
        paged += [t["id"] for t in page]
        if cursor is None:
            break
    assert paged == expected and len(expected) > 37


def test_an_accounts_fills_are_the_trades_it_was_in(traded):
    account = traded.trades("BTC-USD", 1)[0]["buyer"]
    fills, _ = traded.trades_between("BTC-USD", limit=100_000, account=account)
    assert fills and all(account in (t["buyer"], t["seller"]) for t in fills)
    assert len(fills) == sum(account in (t["buyer"], t["seller"]) for t in traded.trades("BTC-USD", 100_000))


def test_a_cursor_that_left_the_history_is_refused():
    with pytest.raises(CursorExpired):
        ExchangeState(ExchangeParams(MARKETS), CHAIN).trades_between("BTC-USD", cursor="gone")


@pytest.mark.parametrize("interval", list(INTERVALS_MS))
def test_candles_equal_a_recomputation_from_the_trades(traded, interval):
    size = INTERVALS_MS[interval]
    for market in ("BTC-USD", "ETH-BTC"):
        trades = traded.trades(market, 100_000)
        groups: dict[int, list[dict]] = defaultdict(list)
        for trade in trades:
            groups[trade["time_ms"] // size * size].append(trade)
        expected = [{"t": t, "open": g[0]["price"], "close": g[-1]["price"],
                     "high": max(g, key=lambda x: Decimal(x["price"]))["price"],
                     "low": min(g, key=lambda x: Decimal(x["price"]))["price"],
                     "volume": sum(Decimal(x["qty"]) for x in g),
                     "quote_volume": sum(Decimal(x["qty"]) * Decimal(x["price"]) for x in g), "trades": len(g)}
                    for t, g in sorted(groups.items())]
        got = traded.candles(market, size)
        assert [{**c, "volume": Decimal(c["volume"]), "quote_volume": Decimal(c["quote_volume"])} for c in got] \
            == expected
    window = traded.candles("BTC-USD", 60_000, T0 + 120_000, T0 + 240_000)
    assert window and all(T0 + 120_000 - 60_000 < c["t"] < T0 + 240_000 for c in window)
    inside = [t for t in traded.trades("BTC-USD", 100_000) if T0 + 120_000 <= t["time_ms"] < T0 + 240_000]
    assert sum(c["trades"] for c in window) == len(inside)
