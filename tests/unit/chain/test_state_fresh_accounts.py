"""Fresh accounts' resting orders expire: an account that holds nothing rests an order at most
`fresh_order_ttl_ms` of block time, whatever it asked; one that traded rests as long as it likes; the expiry is
block time's, so a node restored from a snapshot cancels the same orders in the same block; and a crowd of free
keys leaves a book that stops growing."""
from __future__ import annotations

from typing import Any

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import NewOrderOp
from tests.unit.chain.state_helpers import BLOCK_MS, CHAIN, MARKETS, T0, Chain, TxMaker, new

TTL = 20 * BLOCK_MS


def _chain() -> Chain:
    return Chain(params=ExchangeParams(MARKETS, fresh_order_ttl_ms=TTL))


def _order(chain: Chain, order_id: str) -> dict[str, Any]:
    order = chain.state.order(order_id)
    assert order is not None, order_id
    return order


def test_a_fresh_accounts_order_leaves_the_book_after_the_ttl_and_a_trader_keeps_resting():
    chain, make = _chain(), TxMaker()
    chain.block([make(1, [new("BTC-USD", "buy", "90", "1")]), make(2, [new("BTC-USD", "sell", "90", "1")])])
    assert chain.state.positions.of(make(1, []).account_hex)            # 1 and 2 traded: they hold something
    fresh = make(3, [new("BTC-USD", "buy", "80", "1")])
    trader = make(1, [new("BTC-USD", "buy", "81", "1")])
    placed_at = chain.next_time()
    chain.block([fresh, trader])
    assert _order(chain, fresh.order_id(0))["until"] == placed_at + TTL
    assert _order(chain, trader.order_id(0)).get("until") is None
    while chain.next_time() < placed_at + TTL:
        assert not chain.block([]).timed
    result = chain.block([])
    assert [(t.target, t.reason) for t in result.timed] == [(fresh.order_id(0), "good_til_time")]
    assert _order(chain, fresh.order_id(0))["status"] == "cancelled"
    assert _order(chain, trader.order_id(0))["status"] == "open"


def test_an_own_until_sooner_than_the_ttl_is_kept():
    chain, make = _chain(), TxMaker()
    until = T0 + 5 * BLOCK_MS
    tx = make(4, [NewOrderOp.parse("BTC-USD", "buy", "limit", "80", "1", None, until)])
    chain.block([tx])
    assert _order(chain, tx.order_id(0))["until"] == until


def test_a_restored_node_expires_the_same_fresh_orders_in_the_same_block():
    chain, make = _chain(), TxMaker()
    chain.block([make(n, [new("BTC-USD", "buy", str(50 + n), "1")]) for n in range(10, 20)])
    params = ExchangeParams(MARKETS, fresh_order_ttl_ms=TTL)
    restored = Chain(ExchangeState.restore(params, chain.state.snapshot(), CHAIN))
    while not (original := chain.block([])).timed:
        assert not restored.block([]).timed
    again = restored.block([])
    assert [(t.target, t.reason) for t in again.timed] == [(t.target, t.reason) for t in original.timed]
    assert chain.state.app_hash == restored.state.app_hash and len(original.timed) == 10


def test_a_crowd_of_free_keys_leaves_a_book_that_stops_growing():
    """1,000 fresh accounts, one resting order each a block: the book holds at most the TTL's worth of them."""
    chain, make = _chain(), TxMaker()
    sizes = []
    for step in range(60):
        chain.block([make(100 + step * 20 + n, [new("BTC-USD", "buy", str(10 + n), "1")]) for n in range(20)])
        sizes.append(len(chain.state.open_orders))
    assert max(sizes) <= 21 * 20 and sizes[-1] == sizes[-10], sizes
    unbounded = Chain(params=ExchangeParams(MARKETS, fresh_order_ttl_ms=None))
    for step in range(60):
        unbounded.block([make(5_000 + step * 20 + n, [new("BTC-USD", "buy", str(10 + n), "1")]) for n in range(20)])
    assert len(unbounded.state.open_orders) == 1_200


def test_free_keys_immediate_orders_leave_no_record_in_the_state_and_memory_stays_flat():
    """Fresh accounts' IOC and market orders that find nothing, and their refused ops, never rest: under the rule
    they leave nothing in the closed-order history (which every node keeps and snapshots), only this node's short
    look-up window; an account that traded keeps its records as before. 6,000 such orders in 60 blocks: the state's
    history stays empty and the memory traced after the first blocks does not grow."""
    import tracemalloc

    from exchange.app.history import FRESH_UNRESTED_KEPT

    chain, make = _chain(), TxMaker()
    chain.block([make(1, [new("BTC-USD", "buy", "90", "1")]), make(2, [new("BTC-USD", "sell", "90", "1")])])
    closed_before = len(chain.state.closed)
    state, traced = chain.state, []
    tracemalloc.start()
    try:
        for step in range(60):      # driven here, not by Chain.block, which keeps every block's results
            now = chain.next_time()
            state.begin_block(state.height + 1, now)
            for n in range(50):     # each lives two blocks, so the replay window holds two blocks' ids
                state.apply_tx(make(10_000 + step * 100 + n, [new("BTC-USD", "buy", "1", "1", kind="ioc"),
                                                              new("BTC-USD", "sell", None, "1", kind="market")],
                                    expires=now + 2 * BLOCK_MS))
            state.end_block()
            traced.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert len(chain.state.closed) == closed_before, "no fresh account's unrested order joins the history"
    assert len(chain.state.recent_fresh) == FRESH_UNRESTED_KEPT
    # the look-up window is full by block 41 (4,096 of 100 a block): from then on memory is flat
    assert traced[-1] - traced[45] < 256 * 1024, [round(t / 1024) for t in traced[::5]]
    newest = make(60_000, [new("BTC-USD", "buy", "1", "1", kind="ioc")])
    chain.block([newest])
    view = chain.state.order(newest.order_id(0))
    assert view is not None and view["status"] == "cancelled", "its client finds it here while the window holds it"
    assert chain.state.orders(status="cancelled") == [], "no listing reads the window: every node lists the same"
    # a trader's (account 1 traded) immediate order is kept in the history as before
    traded = make(1, [new("BTC-USD", "buy", "1", "1", kind="ioc")])
    chain.block([traded])
    assert traded.order_id(0) in chain.state.closed
