"""The desk's orders under a seeded random workload: trigger orders, reduce-only orders, client ids (reused, so
some collide), atomic batches and agents acting within and outside their scopes, mixed into the usual trading.
A state restored from a snapshot at any of several heights continues exactly like one that saw every block."""
from __future__ import annotations

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import ApproveAgentOp, AtomicOp, NewOrderOp, Op, SignedTx
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, Workload, account, cancel, new, replace

PARAMS = ExchangeParams(MARKETS, closed_order_history=300, trade_history=50, order_ttl_ms=30_000)
AGENTS = {n: account(200 + n) for n in range(6)}


class DeskWorkload(Workload):
    """Workload's trading, a fifth of it replaced by the desk's operations."""

    def tx(self) -> SignedTx:
        rng = self.rng
        if rng.random() > 0.2:
            return super().tx()
        who = rng.randrange(self.accounts)
        market = rng.choice(["BTC-USD", "ETH-USD"])
        kind = rng.choice(["trigger", "reduce", "named", "atomic", "agent", "approve"])
        ops: list[Op]
        if kind == "trigger":
            trig = rng.choice(["stop_market", "stop_limit", "take_profit"])
            price = self.price(market) if trig == "stop_limit" or (trig == "take_profit" and rng.random() < 0.5) else None
            ops = [NewOrderOp.parse(market, rng.choice(["buy", "sell"]), trig, price, self.qty(market), None, None,
                                    None, self.price(market), True if price is None and rng.random() < 0.3 else None)]
        elif kind == "reduce":
            ops = [NewOrderOp.parse(market, rng.choice(["buy", "sell"]), "market", None, self.qty(market), None, None,
                                    None, None, True)]
        elif kind == "named":
            ops = [NewOrderOp.parse(market, rng.choice(["buy", "sell"]), "limit", self.price(market), self.qty(market),
                                    None, None, f"c{rng.randrange(6)}")]
        elif kind == "atomic":
            mine = [p for p in self.placed[-80:] if p[0] == who][-2:]
            ops = [AtomicOp(), new(market, rng.choice(["buy", "sell"]), self.price(market), self.qty(market))]
            ops += [cancel(m, i) if rng.random() < 0.5 else replace(m, i, self.price(m), self.qty(m)) for _, m, i in mine]
        elif kind == "approve":
            return self.make(who, [ApproveAgentOp.parse(AGENTS[who].hex(), rng.choice([None, "BTC-USD"]),
                                                        rng.choice(["place,cancel", "place", "cancel,replace"]),
                                                        rng.choice([None, "50", "5000"]), None)])
        else:
            inner = super().tx()
            ops = list(inner.ops)
            return SignedTx(CHAIN, AGENTS[who], f"a{self.make.count}-{rng.random()}", self.make.base_time + 5_000,
                            tuple(ops), bytes(64), account(who))
        tx = self.make(who, ops)
        self.placed.extend((who, op.market, tx.order_id(i)) for i, op in enumerate(ops) if isinstance(op, NewOrderOp))
        return tx


@pytest.mark.parametrize("seed", [3, 4])
def test_desk_operations_restore_from_any_snapshot_and_continue_the_same(seed):
    blocks = DeskWorkload(seed=seed, accounts=6).blocks(2_000, per_block=25)
    whole = Chain(ExchangeState(PARAMS, CHAIN))
    resumed: list[Chain] = []
    for height, block in enumerate(blocks, 1):
        result = whole.block(block)
        for chain in resumed:
            assert chain.block(block).app_hash == result.app_hash, (seed, height)
        if height in (10, 30, 60):
            data = whole.state.snapshot()
            resumed.append(Chain(ExchangeState.restore(PARAMS, data, CHAIN)))
            assert resumed[-1].state.snapshot() == data
    for chain in resumed:
        assert chain.state.snapshot() == whole.state.snapshot()
        assert chain.state.orders(limit=10_000) == whole.state.orders(limit=10_000)
    outcomes = {(op.op, op.outcome, op.reason) for r in whole.results for tx in r.txs for op in tx.ops}
    fired = [t for r in whole.results for t in r.timed if t.op == "trigger"]
    assert fired and any(o[1] == "untriggered" for o in outcomes), "triggers waited and fired"
    assert any(o[2] == "duplicate_client_id" for o in outcomes) and any(o[0] == "atomic" for o in outcomes)
    assert any(o[2] in ("market_not_allowed", "operation_not_allowed", "over_notional_cap") for o in outcomes)
    assert any(tx.reason == "agent_not_approved" for r in whole.results for tx in r.txs)
