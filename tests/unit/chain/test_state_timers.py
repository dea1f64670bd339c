"""Cancel-all, the dead-man's switch, good-til-time orders and the open-order cap, on the state machine:
what each cancels, from block time alone, the same on a node restored from a snapshot, and bounded."""
from __future__ import annotations

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.snapshot import InvalidStateSnapshot
from exchange.app.timers import MAX_SWITCH_MS, Timers
from exchange.app.txs import CancelAllOp, InvalidTx, NewOrderOp, Op, ScheduleCancelOp, SignedTx, op_from_json, parse_op
from tests.unit.chain.state_helpers import BLOCK_MS, CHAIN, MARKETS, T0, Chain, account, new

A, B = account(1).hex(), account(2).hex()


def gtt(market: str, side: str, price: str, qty: str, until: int) -> NewOrderOp:
    return NewOrderOp.parse(market, side, "limit", price, qty, None, until)


def open_ids(state: ExchangeState, who: str) -> set[str]:
    return {o["id"] for o in state.orders(who, "open", 10_000)}


def test_cancel_all_cancels_only_the_signers_orders_in_its_scope(chain, make):
    orders = [new("BTC-USD", "buy", "90", "1"), new("BTC-USD", "sell", "110", "1"), new("ETH-USD", "buy", "5", "1")]
    placed = make(1, orders)
    other = make(2, [new("BTC-USD", "buy", "91", "1")])
    chain.block([placed, other])
    result = chain.block([make(1, [CancelAllOp.parse("BTC-USD", "buy")])])
    op = result.txs[0].ops[0]
    assert (op.outcome, op.target, op.reason) == ("cancelled", "BTC-USD/buy", "1_cancelled")
    assert open_ids(chain.state, A) == {placed.order_id(1), placed.order_id(2)}
    assert chain.state.order(placed.order_id(0))["reason"] == "cancel_all"
    chain.block([make(1, [CancelAllOp.parse(None, None)])])
    assert open_ids(chain.state, A) == set() and open_ids(chain.state, B) == {other.order_id(0)}
    assert chain.state.book("BTC-USD")["bids"] == [["91.00", "1.0000"]]
    again = chain.block([make(1, [CancelAllOp.parse(None, None)])]).txs[0].ops[0]
    assert (again.outcome, again.reason) == ("cancelled", "0_cancelled")
    unknown = chain.block([make(1, [CancelAllOp.parse("XRP-USD", None)])]).txs[0].ops[0]
    assert (unknown.outcome, unknown.reason) == ("rejected", "unknown_market")


def test_the_switch_fires_from_block_time_before_the_blocks_transactions(chain, make):
    placed = make(1, [new("BTC-USD", "buy", "90", "1"), new("BTC-USD", "buy", "89", "1")])
    chain.block([placed, make(2, [new("BTC-USD", "buy", "88", "1")])])
    fire_at = chain.next_time() + 5 * BLOCK_MS
    armed = chain.block([make(1, [ScheduleCancelOp.parse(fire_at)])]).txs[0].ops[0]
    assert armed.outcome == "armed" and chain.state.switch(A) == fire_at
    quiet = [chain.block([]) for _ in range(3)]
    assert all(not r.timed for r in quiet) and len(open_ids(chain.state, A)) == 2
    late = make(1, [new("BTC-USD", "buy", "87", "1")])       # in the block the switch fires in: after it
    result = chain.block([late], time_ms=fire_at)
    assert [(t.op, t.target, t.outcome, t.reason) for t in result.timed] == [("schedule_cancel", A, "fired",
                                                                               "2_cancelled")]
    assert open_ids(chain.state, A) == {late.order_id(0)} and chain.state.switch(A) is None
    assert {u["id"] for u in result.order_updates[A] if u["status"] == "cancelled"} == \
        {placed.order_id(0), placed.order_id(1)}
    assert chain.state.order(placed.order_id(0))["reason"] == "scheduled_cancel"
    assert len(open_ids(chain.state, B)) == 1


def test_a_refreshed_switch_moves_and_a_cleared_one_never_fires(chain, make):
    chain.block([make(1, [new("BTC-USD", "buy", "90", "1")]), make(2, [new("BTC-USD", "buy", "91", "1")])])
    first = chain.next_time() + 2 * BLOCK_MS
    chain.block([make(1, [ScheduleCancelOp.parse(first)]), make(2, [ScheduleCancelOp.parse(first)])])
    chain.block([make(1, [ScheduleCancelOp.parse(first + 10 * BLOCK_MS)]), make(2, [ScheduleCancelOp.parse(None)])])
    for _ in range(5):
        assert not chain.block([]).timed
    assert open_ids(chain.state, A) and open_ids(chain.state, B)
    for _ in range(6):
        chain.block([])
    assert not open_ids(chain.state, A) and open_ids(chain.state, B)


@pytest.mark.parametrize("offset", [0, -1, MAX_SWITCH_MS + 1])
def test_a_switch_outside_its_window_is_refused(chain, make, offset):
    chain.block([])
    now = chain.next_time()
    op = chain.block([make(1, [ScheduleCancelOp.parse(now + offset)])]).txs[0].ops[0]
    assert (op.outcome, op.reason) == ("rejected", "at_out_of_range") and chain.state.switch(A) is None


def test_a_good_til_time_order_leaves_the_book_at_its_time_and_a_replace_keeps_it(chain, make):
    chain.state = ExchangeState(ExchangeParams(MARKETS, fresh_order_ttl_ms=None), CHAIN)   # its plain order rests on
    until = T0 + 10 * BLOCK_MS
    placed = make(1, [gtt("BTC-USD", "buy", "90", "2", until), new("BTC-USD", "buy", "80", "1")])
    chain.block([placed])
    assert chain.state.order(placed.order_id(0))["until"] == until
    replaced = make(1, [parse_op(["replace", "BTC-USD", placed.order_id(0), "95", "2"])])
    chain.block([replaced])
    assert chain.state.order(replaced.order_id(0))["until"] == until
    fills = chain.block([make(2, [new("BTC-USD", "sell", "95", "1")])])
    assert fills.trades
    while chain.next_time() < until:
        assert not chain.block([]).timed
    result = chain.block([])
    assert [(t.op, t.target, t.reason) for t in result.timed] == [("until", replaced.order_id(0), "good_til_time")]
    gone = chain.state.order(replaced.order_id(0))
    assert (gone["status"], gone["reason"]) == ("cancelled", "good_til_time")
    assert open_ids(chain.state, A) == {placed.order_id(1)} and not chain.state.timers


def test_a_good_til_time_order_that_fills_leaves_no_timer(chain, make):
    chain.block([make(1, [gtt("BTC-USD", "buy", "90", "1", T0 + 50 * BLOCK_MS)])])
    chain.block([make(2, [new("BTC-USD", "sell", "90", "1")])])
    assert not chain.state.timers and chain.state.snapshot()[1] == 1      # nothing timed: snapshot format 1


def test_an_until_already_passed_is_refused_and_only_resting_types_may_have_one(chain, make):
    chain.block([])
    result = chain.block([make(1, [gtt("BTC-USD", "buy", "90", "1", T0)])]).txs[0].ops[0]
    assert (result.outcome, result.reason) == ("rejected", "until_passed")
    with pytest.raises(InvalidTx) as refused:
        NewOrderOp.parse("BTC-USD", "buy", "ioc", "90", "1", None, T0 + 10_000)
    assert refused.value.code == "until_not_resting"
    for bad in (0, -5, True, "123", 1.5):
        with pytest.raises(InvalidTx):
            NewOrderOp.parse("BTC-USD", "buy", "limit", "90", "1", None, bad)
    with pytest.raises(InvalidTx):     # an until of null written on the wire is not canonical
        parse_op(["new", "BTC-USD", "buy", "limit", "90", "1", None, None])


def test_new_ops_sign_over_text_and_round_trip_wire_and_json():
    ops: list[Op] = [gtt("BTC-USD", "buy", "90", "1", T0), CancelAllOp.parse(None, "sell"), CancelAllOp.parse("BTC-USD", None),
           ScheduleCancelOp.parse(T0), ScheduleCancelOp.parse(None), new("BTC-USD", "buy", "90", "1")]
    assert [op.line() for op in ops] == [
        f"new BTC-USD buy limit 90 1 - until={T0}", "cancel_all - sell", "cancel_all BTC-USD -",
        f"schedule_cancel {T0}", "schedule_cancel -", "new BTC-USD buy limit 90 1 -"]
    for op in ops:
        assert parse_op(op.wire()).line() == op.line() and op_from_json(op.as_json()).line() == op.line()
    tx = SignedTx(CHAIN, account(1), "n", T0, tuple(ops), bytes(64))
    assert SignedTx.from_wire(tx.wire()).id == tx.id and SignedTx.from_json(tx.as_json()).id == tx.id


def test_the_open_order_cap_refuses_resting_orders_beyond_it_but_not_takers_or_replaces(make):
    chain = Chain(params=ExchangeParams(MARKETS, max_open_orders=3))
    first = make(1, [new("BTC-USD", "buy", str(90 - i), "1") for i in range(4)])
    chain.block([first, make(2, [new("BTC-USD", "sell", "100", "1")])])
    outcomes = [(op.outcome, op.reason) for op in chain.results[-1].txs[0].ops]
    assert outcomes[:3] == [("open", None)] * 3 and outcomes[3] == ("rejected", "too_many_open_orders")
    assert chain.state.open_count(A) == 3 and chain.state.open_count(B) == 1
    more = chain.block([make(1, [parse_op(["replace", "BTC-USD", first.order_id(0), "91", "1"]),
                                 new("BTC-USD", "buy", "100", "1", kind="ioc")])]).txs[0].ops
    assert more[0].outcome == "open" and more[1].outcome == "filled"      # a taker that never rests passes
    chain.block([make(1, [CancelAllOp.parse(None, "buy")])])
    again = chain.block([make(1, [new("BTC-USD", "buy", "70", "1")])]).txs[0].ops[0]
    assert again.outcome == "open" and chain.state.open_count(A) == 1


def test_timers_survive_a_snapshot_and_fire_the_same_on_the_restored_node(make):
    params = ExchangeParams(MARKETS)
    live = Chain(params=params)
    txs = [make(1, [gtt("BTC-USD", "buy", str(90 - i), "1", T0 + (20 + i) * BLOCK_MS) for i in range(3)]),
           make(2, [new("ETH-USD", "buy", "5", "1"), new("BTC-USD", "sell", "120", "1")])]
    live.block(txs)
    live.block([make(2, [ScheduleCancelOp.parse(T0 + 25 * BLOCK_MS)])])
    data = live.state.snapshot()
    assert data[1] == 2                          # format 2: timers written
    restored = Chain(ExchangeState.restore(params, data, CHAIN))
    assert restored.state.snapshot() == data
    for _ in range(30):
        a, b = live.block([]), restored.block([])
        assert (a.app_hash, a.timed) == (b.app_hash, b.timed)
    assert live.state.snapshot() == restored.state.snapshot()
    assert not live.state.timers and live.state.snapshot()[1] == 1   # nothing timed left: format 1 again
    assert not open_ids(live.state, A) and not open_ids(live.state, B)


def test_a_snapshot_naming_a_timer_for_an_order_that_does_not_rest_is_refused(make):
    import msgpack
    params = ExchangeParams(MARKETS)
    live = Chain(params=params)
    live.block([make(1, [gtt("BTC-USD", "buy", "90", "1", T0 + 50 * BLOCK_MS)])])
    body = msgpack.unpackb(live.state.snapshot(), raw=False)
    body[12][1][0][0] = "f" * 32
    with pytest.raises(InvalidStateSnapshot):
        ExchangeState.restore(params, msgpack.packb(body, use_bin_type=True), CHAIN)
    body[12] = [[], []]                          # format 2 with no timers is not canonical
    with pytest.raises(InvalidStateSnapshot):
        ExchangeState.restore(params, msgpack.packb(body, use_bin_type=True), CHAIN)


def test_the_timer_heap_stays_bounded_under_constant_refreshing():
    timers = Timers()
    for i in range(100_000):
        timers.set_switch("a", T0 + i)
    assert len(timers._heap) <= 2 * 1 + 64 + 1
    assert timers.due(T0 + 99_998) == [] and timers.due(T0 + 99_999) == [(0, "a")]
