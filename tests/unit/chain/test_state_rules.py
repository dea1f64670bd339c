"""The state machine's rules one at a time: matching through transactions, ownership, bad values,
the replay window and expiry, prechecks, block sequencing, history bounds and the block's results."""
from __future__ import annotations

import pytest

from exchange.app import ExchangeParams, ExchangeState, InvalidQuery
from exchange.app.replay import BUCKET_MS
from exchange.errors import UnknownMarket
from tests.unit.chain.state_helpers import (BLOCK_MS, CHAIN, MARKETS, T0, Chain, TxMaker, account, cancel, new,
                                            replace)

A, B, C = account(1).hex(), account(2).hex(), account(3).hex()


def test_a_crossing_order_trades_at_the_makers_price_and_moves_both_positions(chain, make):
    sell = make(1, [new("BTC-USD", "sell", "100.00", "1")])
    buy = make(2, [new("BTC-USD", "buy", "101.00", "0.4")])
    result = chain.block([sell, buy])
    assert [tx.status for tx in result.txs] == ["applied", "applied"]
    assert result.txs[1].ops[0].outcome == "filled"
    [trade] = result.trades
    assert (trade["price"], trade["qty"], trade["buyer"], trade["seller"]) == ("100.00", "0.4000", B, A)
    assert (trade["maker_order_id"], trade["taker_order_id"]) == (sell.order_id(0), buy.order_id(0))
    state = chain.state
    assert state.position(A)["positions"] == {"BTC": "-0.40000000", "ETH": "0.000", "USD": "40.000000"}
    assert state.position(B)["positions"]["USD"] == "-40.000000"
    assert state.order(sell.order_id(0))["status"] == "partially_filled"
    assert state.order(sell.order_id(0))["remaining"] == "0.6000"
    assert result.book_changes == {"BTC-USD": [["sell", "100.00", "0.6000"]]}
    assert set(result.order_updates) == {A, B}
    assert result.order_updates[A][0]["filled"] == "0.4000"


def test_time_priority_follows_block_then_tx_then_op_order(chain, make):
    first = make(1, [new("BTC-USD", "sell", "100", "1"), new("BTC-USD", "sell", "100", "1")])
    second = make(2, [new("BTC-USD", "sell", "100", "1")])
    chain.block([first, second])
    later = make(3, [new("BTC-USD", "sell", "100", "1")])
    chain.block([later])
    taker = make(4, [new("BTC-USD", "buy", "100", "3.5")])
    result = chain.block([taker])
    assert [t["maker_order_id"] for t in result.trades] == [first.order_id(0), first.order_id(1),
                                                           second.order_id(0), later.order_id(0)]
    assert chain.state.order(later.order_id(0))["remaining"] == "0.5000"
    assert chain.state.order(first.order_id(0))["height"] == 1
    assert (chain.state.order(second.order_id(0))["tx_index"], chain.state.order(first.order_id(1))["op_index"]) \
        == (1, 1)


def test_self_trade_prevention_is_per_account(chain, make):
    chain.block([make(1, [new("BTC-USD", "sell", "100", "1")])])
    own = make(1, [new("BTC-USD", "buy", "100", "1")])
    other = make(2, [new("BTC-USD", "buy", "100", "1")])
    result = chain.block([own, other])
    assert (result.txs[0].ops[0].outcome, result.txs[0].ops[0].reason) == ("cancelled", "self_trade")
    assert result.txs[1].ops[0].outcome == "filled"


def test_an_op_can_name_its_self_trade_mode(chain, make):
    resting = make(1, [new("BTC-USD", "sell", "100", "1")])
    chain.block([resting])
    result = chain.block([make(1, [new("BTC-USD", "buy", "100", "1", stp="cancel_oldest")])])
    assert result.txs[0].ops[0].outcome == "open"
    assert chain.state.order(resting.order_id(0))["reason"] == "self_trade"


@pytest.mark.parametrize("who, op_market, reason", [(2, "BTC-USD", "not_owner"), (1, "ETH-USD", "market_mismatch"),
                                                    (1, "XRP-USD", "unknown_market")])
def test_only_the_owner_may_cancel_or_replace_and_a_refusal_changes_nothing(chain, make, who, op_market, reason):
    order = make(1, [new("BTC-USD", "sell", "100", "1")])
    chain.block([order])
    oid = order.order_id(0)
    digest = chain.state.book("BTC-USD")["digest"]
    attack = make(who, [cancel(op_market, oid), replace(op_market, oid, "99", "2")])
    result = chain.block([attack])
    ops = result.txs[0].ops
    assert [(op.outcome, op.reason) for op in ops] == [("rejected", reason)] * 2
    assert chain.state.order(oid)["status"] == "open"
    assert chain.state.book("BTC-USD")["digest"] == digest
    assert chain.state.order(attack.order_id(1))["status"] == "rejected"   # the refused replace still resolves


def test_cancel_codes_for_unknown_and_closed_orders(chain, make):
    sell = make(1, [new("BTC-USD", "sell", "100", "1")])
    chain.block([sell, make(2, [new("BTC-USD", "buy", "100", "1")])])
    result = chain.block([make(1, [cancel("BTC-USD", sell.order_id(0)), cancel("BTC-USD", "nope")])])
    assert [(op.outcome, op.reason) for op in result.txs[0].ops] == [("rejected", "not_open"),
                                                                     ("rejected", "unknown_order")]
    result = chain.block([make(2, [cancel("BTC-USD", sell.order_id(0))])])
    assert result.txs[0].ops[0].reason == "not_owner"


def test_the_owner_cancels_and_the_level_empties(chain, make):
    order = make(1, [new("BTC-USD", "buy", "99.5", "1")])
    chain.block([order])
    result = chain.block([make(1, [cancel("BTC-USD", order.order_id(0))])])
    assert (result.txs[0].ops[0].outcome, result.txs[0].ops[0].reason) == ("cancelled", "requested")
    assert result.book_changes == {"BTC-USD": [["buy", "99.50", "0"]]}
    assert chain.state.order(order.order_id(0))["status"] == "cancelled"


def test_replace_gives_a_new_order_id_and_loses_priority(chain, make):
    old = make(1, [new("BTC-USD", "sell", "100", "1")])
    other = make(2, [new("BTC-USD", "sell", "100", "1")])
    chain.block([old, other])
    swap = make(1, [replace("BTC-USD", old.order_id(0), "100", "2")])
    result = chain.block([swap])
    op = result.txs[0].ops[0]
    assert (op.order_id, op.target, op.outcome) == (swap.order_id(0), old.order_id(0), "open")
    assert chain.state.order(old.order_id(0))["reason"] == "replaced"
    fill = chain.block([make(3, [new("BTC-USD", "buy", "100", "1")])])
    assert fill.trades[0]["maker_order_id"] == other.order_id(0)


def test_a_bad_value_rejects_only_its_op_and_leaves_a_record(chain, make):
    tx = make(1, [new("BTC-USD", "buy", "100.001", "1"), new("BTC-USD", "buy", "100", "1"),
                  new("BTC-USD", "buy", "100", "0.00001"), new("BTC-USD", "buy", None, "1"),
                  new("BTC-USD", "buy", "1", "1", kind="market"), new("DOGE-USD", "buy", "1", "1"),
                  new("BTC-USD", "buy", "2000000000", "1")])
    result = chain.block([tx])
    assert result.txs[0].status == "applied"
    reasons = [op.reason for op in result.txs[0].ops]
    assert reasons == ["price_not_multiple_of_tick", None, "qty_not_multiple_of_lot", "price_required",
                       "price_not_allowed", "unknown_market", "price_above_band"]
    for index, reason in enumerate(reasons):
        view = chain.state.order(tx.order_id(index))
        assert view["status"] == ("open" if reason is None else "rejected") and view["reason"] == reason
    assert chain.state.order(tx.order_id(5))["price"] is None


def test_a_transaction_applies_once_in_the_same_block_or_later(chain, make):
    tx = make(1, [new("BTC-USD", "buy", "100", "1")])
    result = chain.block([tx, tx])
    assert [(r.status, r.reason) for r in result.txs] == [("applied", None), ("duplicate", "duplicate")]
    assert chain.block([tx]).txs[0].status == "duplicate"
    assert chain.state.book("BTC-USD")["bids"] == [["100.00", "1.0000"]]


def test_the_validity_window_edges():
    state = ExchangeState(ExchangeParams(MARKETS, order_ttl_ms=10_000), CHAIN)
    chain, make = Chain(state), TxMaker()
    at_time = make(1, [new("BTC-USD", "buy", "100", "1")], expires=T0)
    just_after = make(1, [new("BTC-USD", "buy", "100", "1")], expires=T0 + 1)
    at_ttl = make(1, [new("BTC-USD", "buy", "100", "1")], expires=T0 + 10_000)
    beyond = make(1, [new("BTC-USD", "buy", "100", "1")], expires=T0 + 10_001)
    result = chain.block([at_time, just_after, at_ttl, beyond], time_ms=T0)
    assert [(r.status, r.reason) for r in result.txs] == [("expired", "expired"), ("applied", None),
                                                          ("applied", None), ("rejected", "expires_too_far")]


def test_an_expired_transaction_is_recorded_and_its_orders_resolve(chain, make):
    tx = make(1, [new("BTC-USD", "buy", "100", "1"), cancel("BTC-USD", "x")], expires=T0 + 50)
    result = chain.block([tx], time_ms=T0 + 50)
    assert result.txs[0].status == "expired"
    assert [(op.outcome, op.reason) for op in result.txs[0].ops] == [("rejected", "expired")] * 2
    assert chain.state.order(tx.order_id(0))["status"] == "rejected"
    assert chain.state.order(tx.order_id(0))["reason"] == "expired"
    assert chain.state.book("BTC-USD")["bids"] == []


def test_a_committed_transaction_is_refused_after_the_window_forgets_it():
    state = ExchangeState(ExchangeParams(MARKETS, order_ttl_ms=5_000), CHAIN)
    chain, make = Chain(state), TxMaker()
    tx = make(1, [new("BTC-USD", "buy", "100", "1")], expires=T0 + 5_000)
    chain.block([tx], time_ms=T0)
    assert len(state.replay) == 1
    result = chain.block([tx], time_ms=T0 + 5_000 + BUCKET_MS)
    assert result.txs[0].status == "expired" and len(state.replay) == 0
    kept = state.order(tx.order_id(0))
    assert kept is not None and kept["status"] == "open"    # the applied order keeps its record
    assert state.book("BTC-USD")["bids"] == [["100.00", "1.0000"]]


def test_a_transaction_expiring_too_far_out_is_not_remembered_and_fits_later():
    state = ExchangeState(ExchangeParams(MARKETS, order_ttl_ms=5_000), CHAIN)
    chain, make = Chain(state), TxMaker()
    tx = make(1, [new("BTC-USD", "buy", "100", "1")], expires=T0 + 6_000)
    assert chain.block([tx], time_ms=T0).txs[0].reason == "expires_too_far"
    assert state.order(tx.order_id(0)) is None
    assert chain.block([tx], time_ms=T0 + 1_000).txs[0].status == "applied"


def test_a_transaction_for_another_chain_is_refused(chain, make):
    result = chain.block([make(1, [new("BTC-USD", "buy", "100", "1")], chain="cd" * 32)])
    assert (result.txs[0].status, result.txs[0].reason) == ("rejected", "wrong_chain")


def test_the_replay_window_is_pruned_by_block_time():
    state = ExchangeState(ExchangeParams(MARKETS, order_ttl_ms=2_000), CHAIN)
    chain, make = Chain(state), TxMaker()
    for step in range(100):
        now = T0 + step * BLOCK_MS
        chain.block([make(1, [new("BTC-USD", "buy", "1", "1")], expires=now + 2_000) for _ in range(10)], now)
    # ids stay while they could still be valid: at most ttl + one bucket of block time
    assert 200 <= len(state.replay) <= (2_000 + BUCKET_MS) // BLOCK_MS * 10


def test_precheck_codes(chain, make):
    sell = make(1, [new("BTC-USD", "sell", "100", "1")])
    chain.block([sell], time_ms=T0 + 1_000)
    state = chain.state
    check = state.precheck
    good = make(2, [new("BTC-USD", "buy", "100", "1")], expires=T0 + 30_000)
    assert check(good, CHAIN, T0) is None
    assert check(good, "cd" * 32, T0) == "wrong_chain"
    assert check(make(2, [new("BTC-USD", "buy", "1", "1")], expires=T0 + 900), CHAIN, T0) == "expired"  # block time
    assert check(make(2, [new("BTC-USD", "buy", "1", "1")], expires=T0 + 200_000), CHAIN, T0) == "expires_too_far"
    assert check(sell, CHAIN, T0) == "duplicate"
    assert check(make(2, [new("XRP-USD", "buy", "1", "1")]), CHAIN, T0) == "unknown_market"
    assert check(make(2, [new("BTC-USD", "buy", "1.001", "1")]), CHAIN, T0) == "price_not_multiple_of_tick"
    assert check(make(2, [new("BTC-USD", "buy", None, "1")]), CHAIN, T0) == "price_required"
    assert check(make(2, [new("BTC-USD", "buy", "1", "1", kind="market")]), CHAIN, T0) == "price_not_allowed"
    assert check(make(2, [cancel("BTC-USD", sell.order_id(0))]), CHAIN, T0) == "not_owner"
    assert check(make(1, [cancel("BTC-USD", sell.order_id(0))]), CHAIN, T0) is None
    assert check(make(1, [replace("BTC-USD", sell.order_id(0), "1", "0")]), CHAIN, T0) == "qty_zero"


def test_blocks_must_come_in_order_and_time_never_goes_back(chain, make):
    state = chain.state
    with pytest.raises(RuntimeError):
        state.apply_tx(make(1, [new("BTC-USD", "buy", "1", "1")]))
    with pytest.raises(ValueError):
        state.begin_block(2, T0)
    state.begin_block(1, T0)
    with pytest.raises(RuntimeError):
        state.begin_block(2, T0)
    state.end_block()
    with pytest.raises(ValueError):
        state.begin_block(2, T0 - 1)
    with pytest.raises(RuntimeError):
        state.end_block()


def test_app_hash_moves_with_every_block_and_covers_the_results(make):
    one, two = Chain(), Chain()
    assert one.state.app_hash == two.state.app_hash
    one.block([make(1, [new("BTC-USD", "buy", "100", "1")])])
    two.block([make(1, [new("BTC-USD", "buy", "100", "2")])])
    assert one.state.app_hash != two.state.app_hash
    empty = Chain()
    empty.block([])
    assert empty.state.app_hash != Chain().state.app_hash


def test_closed_orders_are_forgotten_oldest_first():
    state = ExchangeState(ExchangeParams(MARKETS, closed_order_history=3), CHAIN)
    chain, make = Chain(state), TxMaker()
    txs = [make(1, [new("BTC-USD", "buy", "100", "1", kind="ioc")]) for _ in range(5)]
    chain.block(txs)
    assert [state.order(tx.order_id(0)) is None for tx in txs] == [True, True, False, False, False]
    assert chain.block([make(1, [cancel("BTC-USD", txs[0].order_id(0))])]).txs[0].ops[0].reason == "unknown_order"


def test_trades_are_kept_per_market_up_to_the_limit_oldest_first():
    state = ExchangeState(ExchangeParams(MARKETS, trade_history=3), CHAIN)
    chain, make = Chain(state), TxMaker()
    chain.block([make(1, [new("BTC-USD", "sell", str(100 + i), "1") for i in range(5)])])
    chain.block([make(2, [new("BTC-USD", "buy", "200", "5")])])
    assert [t["price"] for t in state.trades("BTC-USD")] == ["102.00", "103.00", "104.00"]
    assert [t["price"] for t in state.trades("BTC-USD", limit=2)] == ["103.00", "104.00"]
    assert state.trades("BTC-USD", limit=0) == [] and state.trades("ETH-USD") == []
    with pytest.raises(UnknownMarket):
        state.trades("XRP-USD")


def test_order_listing_filters_and_orders_newest_first(make):
    # without the fresh-account rule, which lists no order of an account holding nothing that never rested (the
    # IOC below: test_state_fresh_accounts.py)
    chain = Chain(params=ExchangeParams(MARKETS, fresh_order_ttl_ms=None))
    a1 = make(1, [new("BTC-USD", "buy", "90", "1")])
    b1 = make(2, [new("BTC-USD", "buy", "91", "1")])
    a2 = make(1, [new("BTC-USD", "buy", "92", "1"), new("BTC-USD", "sell", "1", "1", kind="ioc")])
    chain.block([a1, b1, a2])
    state = chain.state
    assert [o["id"] for o in state.orders(A)] == [a2.order_id(1), a2.order_id(0), a1.order_id(0)]
    assert [o["id"] for o in state.orders(A, "open")] == [a2.order_id(0), a1.order_id(0)]
    assert [o["id"] for o in state.orders(None, "cancelled")] == [a2.order_id(1)]   # self-trade: cancel_newest
    assert len(state.orders(limit=2)) == 2
    with pytest.raises(InvalidQuery):
        state.orders(status="pending")


def test_book_view_and_digest(chain, make):
    chain.block([make(1, [new("BTC-USD", "buy", "99", "1"), new("BTC-USD", "buy", "98", "2"),
                          new("BTC-USD", "sell", "101", "1")])])
    view = chain.state.book("BTC-USD", depth=1)
    assert (view["bids"], view["asks"], view["height"]) == ([["99.00", "1.0000"]], [["101.00", "1.0000"]], 1)
    digest = view["digest"]
    chain.block([make(2, [new("BTC-USD", "sell", "99", "1")])])
    assert chain.state.book("BTC-USD")["digest"] != digest
    with pytest.raises(UnknownMarket):
        chain.state.book("XRP-USD")


def test_block_book_changes_list_each_touched_level_once_best_first(chain, make):
    result = chain.block([make(1, [new("BTC-USD", "buy", "99", "1"), new("BTC-USD", "buy", "100", "1"),
                                   new("BTC-USD", "sell", "102", "1"), new("BTC-USD", "buy", "99", "1")]),
                          make(2, [new("BTC-USD", "sell", "100", "1")])])
    assert result.book_changes == {"BTC-USD": [["buy", "100.00", "0"], ["buy", "99.00", "2.0000"],
                                               ["sell", "102.00", "1.0000"]]}


def test_order_updates_of_some_accounts_are_the_same_views_as_for_all(chain, make):
    result = chain.block([make(1, [new("BTC-USD", "sell", "100.00", "1")]),
                          make(2, [new("BTC-USD", "buy", "101.00", "0.4")])])
    for accounts in ({A}, {B}, {A, B}, set()):
        expected = [view for account, views in result.order_updates.items() if account in accounts for view in views]
        assert sorted(result.order_updates_of(accounts), key=lambda v: v["id"]) == \
            sorted(expected, key=lambda v: v["id"]), accounts
