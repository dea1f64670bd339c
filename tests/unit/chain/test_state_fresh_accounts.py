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
