"""Trigger and reduce-only orders on the state machine: each trigger type fires in the block whose trades cross
its price (after the block's transactions, oldest first), the same on a node restored from a snapshot;
reduce-only orders never grow or flip a position; triggers are cancelled, bounded and kept by snapshots; an
atomic batch runs all of its operations or none."""
from __future__ import annotations

from decimal import Decimal

import msgpack
import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.triggers import MAX_PER_ACCOUNT
from exchange.app.txs import CancelAllOp, InvalidTx, NewOrderOp, SignedTx, op_from_json, parse_op
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, TxMaker, account, cancel, new, replace

A = account(1).hex()


def trig(kind: str, side: str, trigger: str, qty: str = "1", price: str | None = None,
         reduce_only: bool = False) -> NewOrderOp:
    return NewOrderOp.parse("BTC-USD", side, kind, price, qty, None, None, None, trigger, True if reduce_only else None)


def trade_at(make: TxMaker, price: str, qty: str = "1") -> list[SignedTx]:
    """Two transactions that trade `qty` at `price` between accounts 8 and 9."""
    return [make(8, [new("BTC-USD", "sell", price, qty)]), make(9, [new("BTC-USD", "buy", price, qty)])]


def position(chain: Chain, who: str = A) -> Decimal:
    return Decimal(chain.state.position(who)["positions"]["BTC"])


def test_trigger_fields_are_signed_and_judged_by_the_format():
    op = trig("stop_limit", "buy", "105", price="106", qty="2")
    assert op.line() == "new BTC-USD buy stop_limit 106 2 - trigger=105"
    assert parse_op(op.wire()).line() == op.line() == op_from_json(op.as_json()).line()
    market = trig("stop_market", "sell", "95", reduce_only=True)
    assert market.line() == "new BTC-USD sell stop_market - 1 - trigger=95 reduce_only"
    parsed = parse_op(market.wire())
    assert market.wire()[-1] is True and isinstance(parsed, NewOrderOp) and parsed.reduce_only
    for args, code in (((("BTC-USD", "buy", "stop_market", None, "1", None)), "trigger_required"),
                       (("BTC-USD", "buy", "limit", "1", "1", None, None, None, "2"), "trigger_not_allowed"),
                       (("BTC-USD", "buy", "limit", "1", "1", None, None, None, None, True), "reduce_only_must_not_rest"),
                       (("BTC-USD", "buy", "stop_limit", "1", "1", None, None, None, "2", True),
                        "reduce_only_must_not_rest"),
                       (("BTC-USD", "buy", "market", None, "1", None, None, None, None, 1), "invalid_reduce_only")):
        with pytest.raises(InvalidTx) as raised:
            NewOrderOp.parse(*args)
        assert raised.value.code == code
    assert trig("stop_market", "buy", "1").price_problem() is None
    assert NewOrderOp.parse("BTC-USD", "buy", "stop_market", "5", "1", None, None, None, "4").price_problem() \
        == "price_not_allowed"
    assert NewOrderOp.parse("BTC-USD", "buy", "stop_limit", None, "1", None, None, None, "4").price_problem() \
        == "price_required"


def test_each_trigger_type_fires_in_the_block_that_crosses_its_price(chain, make):
    chain.block(trade_at(make, "100"))
    stop_buy = make(1, [trig("stop_market", "buy", "105")])
    stop_limit_sell = make(1, [trig("stop_limit", "sell", "95", price="94")])
    take_profit_sell = make(1, [trig("take_profit", "sell", "110")])
    result = chain.block([stop_buy, stop_limit_sell, take_profit_sell])
    assert [op.outcome for tx in result.txs for op in tx.ops] == ["untriggered"] * 3 and not result.timed
    assert chain.state.order(stop_buy.order_id(0))["status"] == "untriggered"
    assert chain.state.order(stop_buy.order_id(0))["trigger_price"] == "105.00"
    chain.block([make(7, [new("BTC-USD", "sell", "120", "5")])])      # liquidity for the stop buy
    assert not chain.block(trade_at(make, "104")).timed                 # below the stop: nothing fires
    crossed = chain.block(trade_at(make, "105"))
    assert [(t.op, t.order_id, t.outcome) for t in crossed.timed] == [("trigger", stop_buy.order_id(0), "filled")]
    assert chain.state.order(stop_buy.order_id(0))["status"] == "filled" and position(chain) == 1
    (update,) = [u for u in crossed.order_updates[A] if u["id"] == stop_buy.order_id(0)]   # what the stream sends
    assert update["triggered"] and update["status"] == "filled"
    assert crossed.order_updates_of({A}) == crossed.order_updates[A]
    assert chain.state.trades("BTC-USD")[-1]["price"] == "120.00"       # the stop bought at the ask
    rose = chain.block([make(6, [new("BTC-USD", "buy", "93", "3")])])     # the stop's own fill at 120 passed 110
    assert [(t.order_id, t.outcome) for t in rose.timed] == [(take_profit_sell.order_id(0), "filled")]
    assert chain.state.trades("BTC-USD")[-1]["price"] == "93.00"
    fell = chain.block(trade_at(make, "95"))
    assert [(t.order_id, t.outcome) for t in fell.timed] == [(stop_limit_sell.order_id(0), "open")]
    assert chain.state.order(stop_limit_sell.order_id(0))["price"] == "94.00"   # rests: the bid is at 93


def test_triggers_fire_oldest_first_and_a_triggered_order_moves_the_price_only_for_the_next_block(chain, make):
    chain.block(trade_at(make, "100"))
    chain.block([make(7, [new("BTC-USD", "buy", "90", "1"), new("BTC-USD", "buy", "80", "1")])])
    first = make(1, [trig("stop_market", "sell", "99")])
    second = make(2, [trig("stop_market", "sell", "99")])
    deeper = make(3, [trig("stop_market", "sell", "85")])
    chain.block([second, first])            # `second` is older: its transaction comes first in the block
    chain.block([deeper])
    fired = chain.block(trade_at(make, "99"))
    assert [t.order_id for t in fired.timed] == [second.order_id(0), first.order_id(0)]
    assert chain.state.trades("BTC-USD")[-1]["price"] == "80.00"          # the stops sold into 90 then 80
    nxt = chain.block([])
    assert [t.order_id for t in nxt.timed] == [deeper.order_id(0)]       # judged against 80 in the next block
    assert chain.state.order(deeper.order_id(0))["status"] == "cancelled"  # a market order with nothing to take


def test_triggers_fire_the_same_on_a_node_restored_from_a_snapshot(make):
    live = Chain()
    live.block(trade_at(make, "100"))
    live.block([make(7, [new("BTC-USD", "sell", "120", "5"), new("BTC-USD", "buy", "80", "5")])])
    waiting = [make(1, [trig("stop_market", "buy", "105", qty="2")]),
               make(2, [trig("take_profit", "buy", "95", price="96")]),
               make(3, [trig("stop_limit", "sell", "90", price="89")])]
    live.block(waiting)
    data = live.state.snapshot()
    assert msgpack.unpackb(data)[0] == 5            # the format: 16 items, past a fixarray's header
    restored = Chain(ExchangeState.restore(ExchangeParams(MARKETS), data, CHAIN))
    assert restored.state.snapshot() == data
    for order in waiting:
        assert restored.state.order(order.order_id(0)) == live.state.order(order.order_id(0))
    # 106 fires the stop buy, 95 the take-profit (its buy at 96 rests), the first sale at 90 fills that buy at 96,
    # the second trades at 90 and fires the stop-limit sell
    blocks = [trade_at(make, "106"), trade_at(make, "95"), trade_at(make, "90"), trade_at(make, "90"), []]
    for txs in blocks:
        a, b = live.block(txs), restored.block(txs)
        assert a.app_hash == b.app_hash and a.timed == b.timed
    assert sum(len(r.timed) for r in live.results) == 3
    assert live.state.snapshot() == restored.state.snapshot()


def test_reduce_only_never_grows_or_flips_a_position(chain, make):
    chain.block([make(7, [new("BTC-USD", "sell", "100", "2")])])
    chain.block([make(1, [new("BTC-USD", "buy", None, "2", kind="market")])])
    assert position(chain) == 2
    chain.block([make(7, [new("BTC-USD", "buy", "99", "10")])])
    cut = make(1, [NewOrderOp.parse("BTC-USD", "sell", "market", None, "5", None, None, None, None, True)])
    op = chain.block([cut]).txs[0].ops[0]
    assert op.outcome == "filled" and position(chain) == 0
    assert chain.state.order(cut.order_id(0))["qty"] == "2.0000"          # cut down to the position
    again = make(1, [NewOrderOp.parse("BTC-USD", "sell", "ioc", "99", "1", None, None, None, None, True)])
    assert chain.block([again]).txs[0].ops[0].reason == "reduce_only"     # flat: nothing to reduce
    up = make(1, [NewOrderOp.parse("BTC-USD", "buy", "market", None, "1", None, None, None, None, True)])
    assert chain.block([up]).txs[0].ops[0].reason == "reduce_only" and position(chain) == 0


def test_a_reduce_only_stop_is_judged_against_the_position_when_it_fires(chain, make):
    chain.block([make(7, [new("BTC-USD", "sell", "100", "1")]), make(1, [new("BTC-USD", "buy", "100", "1")])])
    stop = make(1, [trig("stop_market", "sell", "95", qty="3", reduce_only=True)])
    chain.block([stop, make(7, [new("BTC-USD", "buy", "94", "5")])])
    fired = chain.block(trade_at(make, "95"))
    assert [(t.order_id, t.outcome) for t in fired.timed] == [(stop.order_id(0), "filled")]
    assert position(chain) == 0 and chain.state.order(stop.order_id(0))["qty"] == "1.0000"


def test_triggers_are_cancelled_one_by_one_or_all_and_bounded_per_account(chain, make):
    chain.block(trade_at(make, "100"))
    one, two = make(1, [trig("stop_market", "buy", "150")]), make(1, [trig("stop_market", "sell", "50")])
    chain.block([one, two])
    assert {o["id"] for o in chain.state.orders(A, "untriggered")} == {one.order_id(0), two.order_id(0)}
    assert chain.block([make(2, [cancel("BTC-USD", one.order_id(0))])]).txs[0].ops[0].reason == "not_owner"
    refused = chain.block([make(1, [replace("BTC-USD", one.order_id(0), "1", "1")])]).txs[0].ops[0]
    assert refused.reason == "trigger_not_replaceable"
    assert chain.block([make(1, [cancel("BTC-USD", one.order_id(0))])]).txs[0].ops[0].outcome == "cancelled"
    assert chain.state.order(one.order_id(0))["status"] == "cancelled"
    swept = chain.block([make(1, [CancelAllOp.parse(None, "sell")])]).txs[0].ops[0]
    assert swept.reason == "1_cancelled" and chain.state.order(two.order_id(0))["reason"] == "cancel_all"
    many = make(1, [trig("stop_market", "buy", str(200 + n)) for n in range(MAX_PER_ACCOUNT + 1)])
    results = chain.block([many]).txs[0].ops
    assert [r.reason for r in results[-2:]] == [None, "too_many_triggers"]
    assert len(chain.state.orders(A, "untriggered", 1000)) == MAX_PER_ACCOUNT
    assert chain.block(trade_at(make, "210")).timed[0].outcome == "cancelled"   # market buys with no asks
    data = chain.state.snapshot()             # cancelled and fired triggers in the closed rows (packed = plain)
    assert ExchangeState.restore(ExchangeParams(MARKETS), data, CHAIN).snapshot() == data


def test_an_atomic_batch_runs_all_or_none_of_its_operations(chain, make):
    from exchange.app.txs import AtomicOp

    resting = make(1, [new("BTC-USD", "buy", "90", "1"), new("BTC-USD", "sell", "110", "1")])
    chain.block([resting])
    bid, ask = resting.order_id(0), resting.order_id(1)
    refused = make(1, [AtomicOp(), cancel("BTC-USD", bid), new("BTC-USD", "buy", "91", "1"),
                       replace("BTC-USD", "f" * 32, "109", "1")])
    assert chain.state.precheck(refused, CHAIN, 0) == "unknown_order"
    ops = chain.block([refused]).txs[0].ops
    assert [(o.op, o.outcome, o.reason) for o in ops] == [
        ("atomic", "rejected", "op_3_unknown_order"), ("cancel", "rejected", "batch_refused"),
        ("new", "rejected", "batch_refused"), ("replace", "rejected", "unknown_order")]
    assert chain.state.order(bid)["status"] == "open" and chain.state.order(refused.order_id(2))["status"] == "rejected"
    twice = make(1, [AtomicOp(), cancel("BTC-USD", bid), cancel("BTC-USD", bid)])
    assert chain.block([twice]).txs[0].ops[0].reason == "op_2_not_open"
    named = make(1, [AtomicOp(), NewOrderOp.parse("BTC-USD", "buy", "limit", "80", "1", None, None, "x"),
                     NewOrderOp.parse("BTC-USD", "buy", "limit", "81", "1", None, None, "x")])
    assert chain.block([named]).txs[0].ops[0].reason == "op_2_duplicate_client_id"
    crossing = make(1, [AtomicOp(), new("BTC-USD", "buy", "85", "1"), new("BTC-USD", "buy", "110", "1", "post_only")])
    assert chain.block([crossing]).txs[0].ops[0].reason == "op_2_post_only_would_take"
    assert {o["id"] for o in chain.state.orders(A, "open")} == {bid, ask}
    done = make(1, [AtomicOp(), cancel("BTC-USD", bid), new("BTC-USD", "buy", "91", "1"),
                    replace("BTC-USD", ask, "109", "2")])
    ops = chain.block([done]).txs[0].ops
    assert [(o.op, o.outcome) for o in ops] == [("atomic", "accepted"), ("cancel", "cancelled"), ("new", "open"),
                                                ("replace", "open")]
    assert {o["price"] for o in chain.state.orders(A, "open")} == {"91.00", "109.00"}


@pytest.mark.parametrize("ops", [
    [["cancel", "BTC-USD", "a" * 32], ["atomic"]],
    [["atomic"]],
    [["atomic"], ["cancel_all", None, None]],
    [["atomic"], ["atomic"], ["cancel", "BTC-USD", "a" * 32]],
])
def test_an_atomic_batch_is_a_first_marker_before_new_cancel_and_replace_only(ops):
    with pytest.raises(InvalidTx) as raised:
        SignedTx.from_wire([CHAIN, account(1), "n", 1, ops, bytes(64)])
    assert raised.value.code == "invalid_atomic"


def test_a_trigger_holding_a_client_id_survives_a_snapshot(make):
    live = Chain()
    named = make(1, [NewOrderOp.parse("BTC-USD", "sell", "stop_market", None, "1", None, None, "stop-1", "90")])
    live.block([named])
    data = live.state.snapshot()
    restored = Chain(ExchangeState.restore(ExchangeParams(MARKETS), data, CHAIN))
    assert restored.state.snapshot() == data
    (found,) = restored.state.orders_by_client_id("stop-1", A)
    assert (found["id"], found["status"], found["client_id"]) == (named.order_id(0), "untriggered", "stop-1")


def test_a_fresh_accounts_trigger_waits_only_as_long_as_its_resting_orders_rest(make):
    chain = Chain(params=ExchangeParams(MARKETS, fresh_order_ttl_ms=1_000))
    chain.block(trade_at(make, "100"))
    fresh = make(1, [trig("stop_market", "buy", "150")])
    chain.block([fresh])
    data = chain.state.snapshot()                     # the trigger's timer is in the snapshot's timers
    restored = Chain(ExchangeState.restore(chain.state.params, data, CHAIN))
    for each in (chain, restored):
        timed = [t for _ in range(12) for t in each.block([]).timed]
        assert [(t.op, t.target, t.reason) for t in timed] == [("until", fresh.order_id(0), "good_til_time")]
        view = each.state.order(fresh.order_id(0))
        assert view is not None and view["status"] == "cancelled" and not each.state.triggers
    assert chain.state.snapshot() == restored.state.snapshot()


def test_the_trigger_table_indexes_each_accounts_triggers():
    from exchange.app.triggers import Trigger, Triggers
    from exchange.orders import Order, OrderType, SelfTradeMode, Side

    table = Triggers()
    for n in range(2_000):
        order = Order.new(f"o{n}", "BTC-USD", Side.BUY, OrderType.MARKET, None, 1, f"acct{n % 100}", (1, n, 0),
                          SelfTradeMode.CANCEL_NEWEST)
        table.add(Trigger(order, "stop_market", 100 + n, False))
    assert [e.order.id for e in table.of("acct7")] == [f"o{n}" for n in range(7, 2_000, 100)]
    assert len(table.by_account["acct7"]) == 20
    table.remove("o7")
    assert "o7" not in table.by_account["acct7"] and len(table.of("acct7")) == 19
