"""Triggers crossed at once are placed at most MAX_FIRED_PER_BLOCK a block, oldest created first, the rest at the
following blocks while the price still crosses them; the same on a node restored from a snapshot in between."""
from __future__ import annotations

import time

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app import machine
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, TxMaker, new
from tests.unit.chain.test_state_triggers import trade_at, trig


@pytest.fixture
def budget(monkeypatch):
    monkeypatch.setattr(machine, "MAX_FIRED_PER_BLOCK", 3)
    return 3


def test_a_crowd_of_crossed_triggers_is_placed_a_budget_a_block_oldest_first(budget):
    make, chain = TxMaker(), Chain()
    chain.block(trade_at(make, "100"))
    stops = [make(who, [trig("stop_market", "buy", f"{110 + who}")]) for who in range(1, 9)]   # created 1..8
    chain.block(stops)
    chain.block([make(7, [new("BTC-USD", "sell", "120", "20")])])       # liquidity: each stop buys at 120
    fired = [[t.order_id for t in chain.block(blocks).timed] for blocks in (trade_at(make, "119"), [], [])]
    order = [stop.order_id(0) for stop in stops]
    assert fired == [order[0:3], order[3:6], order[6:8]]
    assert [len(chain.block([]).timed)] == [0]


def test_the_rest_fire_the_same_on_a_node_restored_between(budget):
    make, live = TxMaker(), Chain()
    live.block(trade_at(make, "100"))
    stops = [make(who, [trig("stop_market", "sell", f"{95 - who}")]) for who in range(1, 9)]
    live.block(stops)
    live.block([make(7, [new("BTC-USD", "buy", "80", "20")])])
    first = live.block(trade_at(make, "86"))
    assert len(first.timed) == 3
    restored = Chain(ExchangeState.restore(ExchangeParams(MARKETS), live.state.snapshot(), CHAIN))
    for _ in range(3):
        a, b = live.block([]), restored.block([])
        assert [(t.order_id, t.outcome) for t in a.timed] == [(t.order_id, t.outcome) for t in b.timed]
        assert a.app_hash == b.app_hash
    assert not live.state.orders(None, "untriggered", 100)


def test_placing_a_block_s_budget_of_a_full_table_is_quick():
    """The table full of one market's crossed stops: a block places MAX_FIRED_PER_BLOCK and leaves the rest."""
    state = ExchangeState(ExchangeParams(MARKETS), CHAIN)
    from exchange.app.triggers import MAX_FIRED_PER_BLOCK, MAX_TOTAL, Trigger
    from exchange.orders import Order, OrderStatus, OrderType, Side

    for n in range(MAX_TOTAL):
        order = Order()
        order.id, order.market, order.owner = f"{n:032x}", "BTC-USD", f"{n % 5000:064x}"
        order.side, order.type, order.price = Side.BUY, OrderType.MARKET, None
        order.quantity = order.remaining = 1
        order.created_key, order.status, order.reason = (1, n, 0), OrderStatus.OPEN, None
        state.triggers.add(Trigger(order, "stop_market", 100 + n % 50, False))
    started = time.perf_counter()
    fired = state.triggers.due("BTC-USD", 200, MAX_FIRED_PER_BLOCK)
    took = time.perf_counter() - started
    assert [e.order.id for e in fired] == [f"{n:032x}" for n in range(MAX_FIRED_PER_BLOCK)]
    assert len(state.triggers.entries) == MAX_TOTAL - MAX_FIRED_PER_BLOCK
    print(f"\nchoosing {MAX_FIRED_PER_BLOCK:,} of {MAX_TOTAL:,} crossed triggers: {took * 1000:.0f} ms")
