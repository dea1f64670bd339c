"""The engine's fast copies pinned to the plain building blocks they inline.

`MatchingEngine.place_order` inlines `Order.new`, the book side's level handling (`BookSide.add`,
`BookSide.drop_level`) and the matching loop. `PlainEngine` places orders with exactly those building
blocks, written the obvious way; for random order streams both must give the same events, the same
orders field by field, the same book and the same digest."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from exchange.events import Event, OrderAccepted, OrderCancelled, OrderRejected, Trade
from exchange.matching import _REMAINDER_REASON, MatchingEngine, _limit_key
from exchange.orders import Order, OrderStatus, OrderType, SelfTradeMode, Side
from tests.unit.exchange.streams import MARKET, commands, operations


class PlainEngine(MatchingEngine):
    """The same rules as MatchingEngine, with `place_order` built from the plain pieces."""

    def place_order(self, order_id: str, side: Side, order_type: OrderType, quantity: int, price: int | None = None,
                    owner: str = "", created_key: Any = None, mode: SelfTradeMode | None = None) -> list[Event]:
        problem = self._new_order_problem(order_id, side, order_type, quantity, price, owner, mode)
        if problem is not None:
            return [OrderRejected.of("new", order_id, problem)]
        order = Order.new(order_id, self._symbol, side, order_type, price, quantity, owner, created_key,
                          self._default_mode if mode is None else mode)
        refusal = self._refusal(order)
        if refusal is not None:
            order.status, order.reason = OrderStatus.REJECTED, refusal
            return [OrderRejected.of("new", order_id, refusal)]
        events: list[Event] = [OrderAccepted.of(order, quantity)]
        opposite = self.book.asks if side is Side.BUY else self.book.bids
        limit = _limit_key(order)
        while order.remaining and opposite.levels and opposite.best <= limit:
            key = opposite.best
            level = opposite.levels[key]
            maker = level[0]
            if maker.status is OrderStatus.CANCELLED:
                level.popleft()
                continue
            if maker.owner == owner:
                if not self._prevent_self_trade(order, maker, events):
                    return events
                continue
            lots = min(maker.remaining, order.remaining)
            maker.remaining -= lots
            order.remaining -= lots
            level.volume -= lots
            events.append(Trade.of(level.price, lots, order, maker, order.remaining, maker.remaining))
            if maker.remaining:
                maker.status = OrderStatus.PARTIALLY_FILLED
            else:
                maker.status = OrderStatus.FILLED
                level.popleft()
                level.live -= 1
                del self.book.orders[maker.id]
                if not level.live:
                    opposite.drop_level(key)
        if not order.remaining:
            order.status = OrderStatus.FILLED
            return events
        if order.remaining != order.quantity:
            order.status = OrderStatus.PARTIALLY_FILLED
        if order_type in (OrderType.LIMIT, OrderType.POST_ONLY):
            self.book.rest(order)
        else:
            reason = _REMAINDER_REASON[order_type]
            order.status, order.reason = OrderStatus.CANCELLED, reason
            events.append(OrderCancelled.of(order_id, order.remaining, reason))
        return events


def order_fields(order: Order) -> tuple[Any, ...]:
    return tuple(getattr(order, name) for name in Order.__slots__)


def event_view(event: Event) -> tuple[Any, ...]:
    """An event with the orders it carries replaced by all their fields (at the time of the comparison)."""
    return tuple(order_fields(v) if isinstance(v, Order) else v for v in event.fields())


@settings(max_examples=300, deadline=None)
@given(operations)
def test_place_order_agrees_with_the_plain_building_blocks(plan: list[tuple]) -> None:
    fast, plain = MatchingEngine(MARKET), PlainEngine(MARKET)
    for command in commands(plan):
        fast_events, plain_events = fast.apply(command), plain.apply(command)
        assert [event_view(e) for e in fast_events] == [event_view(e) for e in plain_events], command
        assert fast.digest() == plain.digest(), command
    assert fast.snapshot() == plain.snapshot()
    assert fast.depth() == plain.depth()
    assert sorted(map(order_fields, fast.book.orders.values())) == sorted(map(order_fields, plain.book.orders.values()))
    for name in ("bids", "asks"):
        fast_side, plain_side = getattr(fast.book, name), getattr(plain.book, name)
        assert fast_side.best == plain_side.best
        assert fast_side.ordered_keys() == plain_side.ordered_keys()
        assert {k: (lv.live, lv.volume) for k, lv in fast_side.levels.items()} == \
               {k: (lv.live, lv.volume) for k, lv in plain_side.levels.items()}

