"""Engine edges: invalid commands become rejected events (never exceptions), commands round-trip as
plain dicts, views, snapshot/restore/digest, and the API-shaped views with decimal strings."""
from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from exchange.commands import CancelOrder, Command, NewOrder, ReduceOrder, ReplaceOrder, command_from_dict
from exchange.display import depth_view, order_view, trade_view
from exchange.errors import InvalidCommand, InvalidSnapshot
from exchange.events import OrderAccepted, OrderRejected, Trade
from exchange.markets import parse_market_entry
from exchange.matching import MAX_ORDER_ID_CHARS, MatchingEngine
from exchange.orders import OrderStatus, OrderType, SelfTradeMode, Side, order_id_from_key

BUY, SELL, LIMIT = Side.BUY, Side.SELL, OrderType.LIMIT


def engine(spec: str = "TEST-USD:0.01:0.1:0.1:100:1:1000") -> MatchingEngine:
    return MatchingEngine(parse_market_entry(spec))


def rejection(events: list) -> str:
    assert len(events) == 1 and isinstance(events[0], OrderRejected), events
    return events[0].reason


def good(**changes: object) -> NewOrder:
    fields = dict(order_id="o1", side=BUY, order_type=LIMIT, quantity=5, price=10000, owner="ann",
                  created_key=(1, "n", 1), self_trade=None)
    fields.update(changes)
    return NewOrder(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("changes, code", [
    ({"order_id": ""}, "invalid_order_id"),
    ({"order_id": 7}, "invalid_order_id"),
    ({"order_id": ["x"]}, "invalid_order_id"),
    ({"order_id": "x" * (MAX_ORDER_ID_CHARS + 1)}, "invalid_order_id"),
    ({"side": "buy"}, "invalid_side"),
    ({"side": None}, "invalid_side"),
    ({"side": "sell", "order_type": OrderType.POST_ONLY}, "invalid_side"),
    ({"side": 1, "order_type": OrderType.FOK}, "invalid_side"),
    ({"side": "buy", "order_type": OrderType.MARKET, "price": None}, "invalid_side"),
    ({"side": "buy", "order_id": ""}, "invalid_order_id"),   # the first bad field is named, as before
    ({"order_type": "limit"}, "invalid_order_type"),
    ({"quantity": 5.0}, "float_not_allowed"),
    ({"quantity": "5"}, "invalid_quantity"),
    ({"quantity": True}, "invalid_quantity"),
    ({"quantity": 0}, "qty_below_min"),
    ({"quantity": -3}, "qty_below_min"),
    ({"quantity": 1001}, "qty_above_max"),
    ({"price": None}, "price_required"),
    ({"price": 100.5}, "float_not_allowed"),
    ({"price": "100"}, "invalid_price"),
    ({"price": 99}, "price_below_band"),
    ({"price": 100001}, "price_above_band"),
    ({"order_type": OrderType.MARKET}, "price_not_allowed"),
    ({"owner": None}, "invalid_owner"),
    ({"self_trade": "cancel_both"}, "invalid_self_trade_mode"),
])
def test_invalid_new_orders_are_rejected_with_a_code(changes: dict, code: str) -> None:
    subject = engine()
    assert rejection(subject.apply(good(**changes))) == code
    assert len(subject.book) == 0


def test_an_invalid_side_leaves_a_crossing_book_untouched() -> None:
    subject = engine()
    subject.place_order("s1", SELL, LIMIT, 5, 10000, "bob")
    before = subject.digest()
    for side in ("buy", None, 0):
        assert rejection(subject.place_order("x", side, LIMIT, 5, 10000, "ann")) == "invalid_side"  # type: ignore[arg-type]
    resting = subject.order("s1")
    assert resting is not None
    assert subject.digest() == before and resting.remaining == 5


def test_duplicate_live_id_is_rejected_and_unknown_commands_too() -> None:
    subject = engine()
    subject.apply(good())
    assert rejection(subject.apply(good(price=10001))) == "duplicate_order_id"
    assert rejection(subject.apply(object())) == "unknown_command"
    assert rejection(subject.apply(CancelOrder(["unhashable"]))) == "unknown_order"  # type: ignore[arg-type]
    assert rejection(subject.apply(ReduceOrder("o1", 2.5))) == "invalid_reduce_by"  # type: ignore[arg-type]
    assert rejection(subject.apply(ReduceOrder("o1", 1, owner="eve"))) == "not_owner"
    assert rejection(subject.apply(ReplaceOrder("o1", "o2", 5, 100001))) == "price_above_band"
    assert rejection(subject.apply(ReplaceOrder("o1", "o1", 5, 10000))) == "duplicate_order_id"
    assert rejection(subject.apply(ReplaceOrder("o1", "o2", 5, 10000, owner="eve"))) == "not_owner"
    assert [o.id for o in subject.l3()["bids"]] == ["o1"]


def test_statuses_follow_the_order_life() -> None:
    subject = engine()
    subject.apply(NewOrder("s1", SELL, LIMIT, 10, 10000, "ann"))
    maker = subject.order("s1")
    assert maker is not None
    assert maker.status is OrderStatus.OPEN
    events = subject.apply(NewOrder("b1", BUY, OrderType.IOC, 4, 10000, "bob"))
    accepted = events[0]
    assert isinstance(accepted, OrderAccepted)
    taker = accepted.order
    assert maker.status is OrderStatus.PARTIALLY_FILLED and maker.filled == 4
    assert taker.status is OrderStatus.FILLED and subject.order("b1") is None
    subject.apply(NewOrder("b2", BUY, OrderType.IOC, 8, 10000, "bob"))
    assert maker.status is OrderStatus.FILLED and subject.order("s1") is None
    events = subject.apply(NewOrder("b3", BUY, OrderType.MARKET, 8, None, "bob"))
    accepted = events[0]
    assert isinstance(accepted, OrderAccepted)
    assert accepted.order.status is OrderStatus.CANCELLED and accepted.order.reason == "market_remainder"


def test_views_best_spread_depth_l3() -> None:
    subject = engine()
    assert (subject.best_bid(), subject.best_ask(), subject.spread()) == (None, None, None)
    for order_id, side, price, qty in [("b1", BUY, 9990, 2), ("b2", BUY, 9990, 3), ("b3", BUY, 9980, 1),
                                       ("s1", SELL, 10010, 4), ("s2", SELL, 10030, 5)]:
        subject.apply(NewOrder(order_id, side, LIMIT, qty, price, "ann"))
    assert (subject.best_bid(), subject.best_ask(), subject.spread()) == (9990, 10010, 20)
    assert subject.depth(1) == {"bids": [(9990, 5)], "asks": [(10010, 4)]}
    assert subject.depth() == {"bids": [(9990, 5), (9980, 1)], "asks": [(10010, 4), (10030, 5)]}
    assert [o.id for o in subject.l3()["bids"]] == ["b1", "b2", "b3"]
    view = depth_view(subject, 1)
    assert view["bids"] == [["99.90", "0.5"]] and view["asks"] == [["100.10", "0.4"]]
    assert view["digest"] == subject.digest()


def test_events_and_orders_are_plain_data() -> None:
    subject = engine()
    subject.apply(NewOrder("s1", SELL, LIMIT, 5, 10000, "ann", (1, "a", 1)))
    events = subject.apply(NewOrder("b1", BUY, LIMIT, 7, 10010, "bob", (2, "b", 1), SelfTradeMode.CANCEL_BOTH))
    dicts: list[Any] = [event.to_dict() for event in events]     # as JSON and msgpack see them
    assert [d["type"] for d in dicts] == ["accepted", "trade"]
    assert orjson.loads(orjson.dumps(dicts)) == dicts
    assert msgpack.unpackb(msgpack.packb(dicts)) == dicts
    trade = events[1]
    assert isinstance(trade, Trade) and trade.id == "b1:s1"
    assert (trade.buy_order_id, trade.sell_order_id, trade.price) == ("b1", "s1", 10000)
    assert dicts[1]["maker_remaining"] == 0 and dicts[1]["taker_remaining"] == 2
    b1 = subject.order("b1")
    assert b1 is not None
    resting = b1.to_dict()
    assert resting["status"] == "partially_filled" and resting["filled"] == 5 and resting["created_key"] == [2, "b", 1]
    market = subject.market
    assert trade_view(trade, market)["price"] == "100.00"
    assert order_view(b1, market)["remaining"] == "0.2"


@pytest.mark.parametrize("command", [
    NewOrder("o1", BUY, OrderType.POST_ONLY, 5, 10000, "ann", (3, "node", 9), SelfTradeMode.DECREMENT_AND_CANCEL),
    NewOrder("o2", SELL, OrderType.MARKET, 5, None, "ann", None, None),
    CancelOrder("o1", "ann"), CancelOrder("o1"), ReduceOrder("o1", 2, None),
    ReplaceOrder("o1", "o3", 4, 10010, (4, "node", 1), "ann"),
])
def test_commands_round_trip_through_plain_dicts(command: Command) -> None:
    data = msgpack.unpackb(msgpack.packb(command.to_dict()))
    rebuilt = command_from_dict(data)
    assert type(rebuilt) is type(command) and rebuilt.to_dict() == command.to_dict()


@pytest.mark.parametrize("data, code", [
    ([], "invalid_command"), ({"op": "explode"}, "unknown_operation"),
    ({"op": "new", "order_id": "a", "side": "up"}, "invalid_side"),
    ({"op": "new", "order_id": "a", "side": "buy", "order_type": "gtd"}, "invalid_order_type"),
    ({"op": "new", "order_id": "a", "side": "buy", "order_type": "limit", "quantity": 1.5}, "float_not_allowed"),
    ({"op": "new", "order_id": "a", "side": "buy", "order_type": "limit", "quantity": 1, "price": "1",
      "owner": "x"}, "invalid_price"),
    ({"op": "cancel", "order_id": 5}, "invalid_order_id"),
    ({"op": "reduce", "order_id": "a", "reduce_by": False}, "invalid_reduce_by"),
])
def test_bad_command_dicts_raise_typed_errors(data: object, code: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        command_from_dict(data)
    assert caught.value.code == code


def test_order_id_from_key_is_stable() -> None:
    assert order_id_from_key((12, "abcd", 3)) == "12-abcd-3"


def populated() -> MatchingEngine:
    subject = engine()
    for n, (side, price, qty, owner) in enumerate([(BUY, 9990, 2, "a"), (BUY, 9990, 3, "b"), (SELL, 10010, 4, "c"),
                                                   (SELL, 10020, 5, "a"), (BUY, 10010, 1, "d")]):
        subject.apply(NewOrder(f"o{n}", side, LIMIT, qty, price, owner, (n, "node", n)))
    return subject


def test_snapshot_is_plain_data_and_restore_keeps_the_digest_and_the_future() -> None:
    original = populated()
    snapshot = msgpack.unpackb(msgpack.packb(original.snapshot()))
    restored = engine()
    restored.restore(snapshot)
    assert restored.digest() == original.digest()
    assert [o.to_dict() for o in restored.l3()["asks"]] == [o.to_dict() for o in original.l3()["asks"]]
    follow_up = [NewOrder("x1", BUY, LIMIT, 6, 10020, "z", (9, "n", 1)), CancelOrder("o1"), ReduceOrder("o3", 2)]
    for command in follow_up:
        assert [e.to_dict() for e in original.apply(command)] == [e.to_dict() for e in restored.apply(command)]
    assert restored.digest() == original.digest()


def test_digest_sees_every_difference() -> None:
    base = populated().digest()
    changed = populated()
    changed.apply(ReduceOrder("o1", 1))
    assert changed.digest() != base
    assert populated().digest() == base


def test_digest_depends_on_queue_order() -> None:
    first, second = engine(), engine()
    a = NewOrder("a", BUY, LIMIT, 2, 9990, "x", (1, "n", 1))
    b = NewOrder("b", BUY, LIMIT, 3, 9990, "y", (2, "n", 1))
    for command in (a, b):
        first.apply(command)
    for command in (b, a):
        second.apply(command)
    assert first.depth() == second.depth()
    assert first.digest() != second.digest()


@pytest.mark.parametrize("mutate, code", [
    (lambda s: s.update(format=99), "unsupported_snapshot"),
    (lambda s: s.update(market="ETH-USD"), "market_mismatch"),
    (lambda s: s.update(bids="nope"), "malformed_snapshot"),
    (lambda s: s["bids"][0][1][0].__setitem__(3, 0), "malformed_snapshot"),
    (lambda s: s["bids"][0][1][0].__setitem__(1, "market"), "malformed_snapshot"),
    (lambda s: s["bids"][0][1].append(list(s["bids"][0][1][0])), "malformed_snapshot"),
    (lambda s: s["bids"][0].__setitem__(0, 10020), "crossed_book"),
])
def test_bad_snapshots_are_refused(mutate, code: str) -> None:
    snapshot = populated().snapshot()
    mutate(snapshot)
    with pytest.raises(InvalidSnapshot) as caught:
        engine().restore(snapshot)
    assert caught.value.code == code


def test_sizes_and_prices_past_the_fast_check_cap_take_the_detailed_check() -> None:
    """The fast acceptance check stops at 2**30 - 1 (one CPython int digit); the market's real bounds rule."""
    subject = engine("BIG-USD:1:1:1:10000000000:1:100000000000")
    big_qty, big_price = (1 << 30) + 5, (1 << 33) + 7
    assert [e.kind for e in subject.place_order("s1", SELL, LIMIT, big_qty, big_price, "ann")] == ["accepted"]
    events = subject.place_order("b1", BUY, LIMIT, big_qty + 3, big_price, "bob")
    assert [e.kind for e in events] == ["accepted", "trade"]
    trade = events[1]
    assert isinstance(trade, Trade)
    assert (trade.price, trade.quantity, trade.taker_remaining) == (big_price, big_qty, 3)
    assert subject.depth() == {"bids": [(big_price, 3)], "asks": []}
    assert rejection(subject.place_order("b2", BUY, LIMIT, 10_000_000_001, 5, "bob")) == "qty_above_max"
    assert rejection(subject.place_order("b3", BUY, LIMIT, 5, 100_000_000_001, "bob")) == "price_above_band"


def test_events_compare_by_value_and_build_from_fields() -> None:
    first = engine().place_order("o1", BUY, LIMIT, 5, 10000, "ann", (1, "n", 1))
    again = engine().place_order("o1", BUY, LIMIT, 5, 10000, "ann", (1, "n", 1))
    assert first[0].to_dict() == again[0].to_dict()
    assert OrderRejected.of("cancel", "x", "unknown_order") == engine().cancel_order("x")[0]
    assert OrderRejected.of("cancel", "x", "unknown_order") != OrderRejected.of("cancel", "y", "unknown_order")
    assert repr(OrderRejected.of("cancel", "x", "unknown_order")) == (
        "OrderRejected(operation='cancel', order_id='x', reason='unknown_order')")
    with pytest.raises(TypeError):
        OrderRejected.of("cancel", "x")
