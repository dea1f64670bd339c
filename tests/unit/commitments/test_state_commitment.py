"""The state commitment kept block by block equals the one built from the whole state at every height, on two
nodes fed the same blocks and on nodes restored from snapshots at random heights; and it moves with what it covers."""
from __future__ import annotations

import random

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.commitment import StateCommitment
from exchange.app.txs import NewOrderOp, SignedTx
from exchange.commitments import layout
from exchange.commitments.verify import verify_get
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, TxMaker, Workload, account, new

PARAMS = ExchangeParams(MARKETS, closed_order_history=120, trade_history=40, order_ttl_ms=30_000,
                        credit_limits={"USD": "5"}, credit_authority=account(9).hex())


class WithTriggers(Workload):
    """The mix of `Workload` with stop and take-profit orders now and then, so triggers wait, fire and are cancelled."""

    def tx(self) -> SignedTx:
        if self.rng.random() < 0.06:
            who, mid = self.rng.randrange(self.accounts), 100 + self.rng.randint(-10, 10)
            kind = self.rng.choice(["stop_market", "take_profit"])
            op = NewOrderOp.parse("BTC-USD", self.rng.choice(["buy", "sell"]), kind, None, "0.001", None, None, None,
                                  f"{mid}.00")
            tx = self.make(who, [op])
            self.placed.append((who, "BTC-USD", tx.order_id(0)))
            return tx
        return super().tx()


def test_kept_roots_equal_built_roots_at_every_height_across_nodes_and_restores():
    _roots_agree(seed=11, txs=2_400)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_kept_roots_equal_built_roots_over_a_long_run(seed: int):
    _roots_agree(seed=seed, txs=30_000)


def _roots_agree(seed: int, txs: int) -> None:
    """Two states fed the same blocks, and states restored from snapshots at random heights, hold one root at every
    height, and it is the root built from the whole state."""
    rng = random.Random(seed * 7)
    blocks = WithTriggers(seed=seed, accounts=8).blocks(txs, per_block=30)
    one, two = Chain(ExchangeState(PARAMS, CHAIN)), Chain(ExchangeState(PARAMS, CHAIN))
    restored: list[Chain] = []
    roots, made = set(), 0
    for n, block in enumerate(blocks):
        time_ms = one.next_time()
        one.block(block, time_ms)
        two.block(block, time_ms)
        for late in restored:
            late.block(block, time_ms)
        state = one.state
        assert state.state_root == two.state.state_root == StateCommitment.build(state).root, f"block {n}"
        assert state.app_hash == two.state.app_hash
        for late in restored:
            assert late.state.state_root == state.state_root and late.state.app_hash == state.app_hash, f"block {n}"
        if rng.random() < 0.05:
            restored.append(Chain(ExchangeState.restore(PARAMS, state.snapshot(), CHAIN)))
            made += 1
            del restored[:-3]                  # three restored states follow at a time
        roots.add(state.state_root)
    assert made >= 2 and len(roots) == len(blocks)
    state = one.state
    assert len(state.closed) == PARAMS.closed_order_history     # the history forgot orders along the way
    assert any(len(venue.trades) == PARAMS.trade_history for venue in state.venues.values())


def test_the_root_covers_an_order_record_and_its_book_level():
    chain, make = Chain(ExchangeState(PARAMS, CHAIN)), TxMaker(lifetime=5_000)
    empty = chain.state.state_root
    tx = make(1, [new("BTC-USD", "buy", "99.00", "0.002")])
    chain.block([tx])
    state = chain.state
    assert state.state_root != empty and state.commitment is not None
    top = state.commitment.top.root()
    assert top == state.state_root
    orders_root = verify_get(top, layout.ORDERS, state.commitment.top.prove_get(layout.ORDERS)[1])
    assert orders_root == state.commitment.orders.root()
    key = layout.name_key(tx.order_id(0))
    record = verify_get(state.commitment.orders.root(), key, state.commitment.orders.prove_get(key)[1])
    assert record is not None
    assert layout.unpack(record) == [account(1).hex(), "BTC-USD", "buy", "limit", 9900, 20, 20, "open", None]
    levels = state.commitment.markets["BTC-USD"].levels
    assert layout.unpack(levels.get(layout.price_key(layout.BIDS, 9900)) or b"") == [20, 1]
    chain.block([make(2, [new("BTC-USD", "sell", "99.00", "0.002")])])   # another account takes it
    assert chain.state.state_root != top
