"""Every node computes the same state from the same blocks: app hashes, snapshot bytes and views agree,
a state restored from a snapshot continues exactly like one that saw everything, and positions are
the independently summed trade log."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.app import ExchangeParams, ExchangeState
from tests.unit.chain.state_helpers import (CHAIN, MARKETS, Chain, Workload, account, nonzero, state_positions,
                                            trade_positions)

ACCOUNTS = [account(n).hex() for n in range(8)]
PARAMS = ExchangeParams(MARKETS, closed_order_history=300, trade_history=50, order_ttl_ms=30_000,
                        credit_limits={"USD": "5"}, credit_authority=account(9).hex())


def views(state: ExchangeState) -> dict:
    return {
        "books": {m: state.book(m) for m in state.venues},
        "trades": {m: state.trades(m) for m in state.venues},
        "orders": state.orders(limit=10_000),
        "positions": {who: state.position(who) for who in ACCOUNTS},
    }


def test_two_states_fed_the_same_blocks_agree_on_everything():
    blocks = Workload(seed=7, accounts=8).blocks(1_500, per_block=30)
    one, two = Chain(ExchangeState(PARAMS, CHAIN)), Chain(ExchangeState(PARAMS, CHAIN))
    for block in blocks:
        first, second = one.block(block), two.block(block)
        assert first.app_hash == second.app_hash
        assert (first.trades, first.book_changes, first.order_updates) == \
            (second.trades, second.book_changes, second.order_updates)
    assert one.state.snapshot() == two.state.snapshot()
    assert views(one.state) == views(two.state)
    assert sum(len(result.trades) for result in one.results) > 300
    assert sum(tx.status == "applied" for result in one.results for tx in result.txs) == 1_500


def test_a_restored_state_fed_the_rest_equals_one_fed_everything():
    blocks = Workload(seed=8, accounts=8).blocks(1_500, per_block=30)
    whole = Chain(ExchangeState(PARAMS, CHAIN))
    for block in blocks[:25]:
        whole.block(block)
    snapshot = whole.state.snapshot()
    resumed = Chain(ExchangeState.restore(PARAMS, snapshot, CHAIN))
    assert resumed.state.snapshot() == snapshot and views(resumed.state) == views(whole.state)
    for block in blocks[25:]:
        assert resumed.block(block).app_hash == whole.block(block).app_hash
    assert len(whole.state.replay) > 100 and len(whole.state.open_orders) > 20
    assert resumed.state.snapshot() == whole.state.snapshot()
    assert views(resumed.state) == views(whole.state)
    assert resumed.state.credit is not None and whole.state.credit is not None
    assert resumed.state.credit.exposure == whole.state.credit.exposure


def test_snapshot_size_stays_bounded_by_the_history_limits():
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    sizes = []
    for index, block in enumerate(Workload(seed=9, accounts=8).blocks(3_000, per_block=30)):
        chain.block(block)
        if index % 25 == 24:
            sizes.append(len(chain.state.snapshot()))
    assert len(chain.state.closed) == 300
    assert max(sizes[1:]) < 2 * sizes[1], sizes   # grows with the book and the window, not with history


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_seeded_run_of_1000_orders_positions_equal_the_summed_trade_log(seed):
    workload = Workload(seed=seed, accounts=6)
    chain = Chain()
    for block in workload.blocks(1_000, per_block=20):
        chain.block(block)
    traded = nonzero(trade_positions(chain.results))
    accounts = [account(n).hex() for n in range(6)]
    assert state_positions(chain.state, accounts) == traded
    assert len(traded) >= 5 and sum(len(r.trades) for r in chain.results) > 200
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for held in traded.values():
        for asset, amount in held.items():
            totals[asset] += amount
    assert set(totals) == {"BTC", "ETH", "USD"} and all(v == 0 for v in totals.values())
    assert all(v == 0 for v in chain.state.positions.totals().values())
    filled: dict[str, Decimal] = defaultdict(Decimal)
    for result in chain.results:
        for trade in result.trades:
            filled[trade["maker_order_id"]] += Decimal(trade["qty"])
            filled[trade["taker_order_id"]] += Decimal(trade["qty"])
    for order_id, amount in filled.items():
        view = chain.state.order(order_id)
        assert view is not None
        assert amount == Decimal(view["filled"]) <= Decimal(view["qty"])


RUN_IN_A_PROCESS = """
import hashlib
from exchange.app import ExchangeParams, ExchangeState
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, Workload, account
params = ExchangeParams(MARKETS, closed_order_history=300, trade_history=50, order_ttl_ms=30_000,
                        credit_limits={"USD": "5"}, credit_authority=account(9).hex())
chain = Chain(ExchangeState(params, CHAIN))
for block in Workload(seed=11, accounts=8).blocks(600, per_block=30):
    chain.block(block)
print(chain.state.app_hash.hex(), hashlib.sha256(chain.state.snapshot()).hexdigest())
"""


@pytest.mark.process     # Python children with other hash seeds
def test_processes_with_different_hash_seeds_compute_the_same_state():
    """Python randomises str hashing per process: no set or dict order may leak into the state."""
    outputs = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", RUN_IN_A_PROCESS], env=env, capture_output=True, text=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[3])
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1 and len(outputs.pop().split()) == 2


def test_precheck_refuses_every_transaction_the_chain_has_applied():
    blocks = Workload(seed=12, accounts=8).blocks(900, per_block=30)
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    applied = []
    for block in blocks:
        result = chain.block(block)
        applied += [tx for tx, r in zip(block, result.txs) if r.status == "applied"]
        for tx in applied[-200:]:
            assert chain.state.precheck(tx, CHAIN, chain.state.time_ms) in ("duplicate", "expired")
    assert len(applied) == 900
