"""A deliberately naive reference matcher (one list, linear scans) with the engine's rules, for property tests.

It knows nothing of the engine's data structures: the best resting order is found
by scanning for the minimum (price priority, arrival number). Its output is a list
of plain tuples that `describe` also produces from engine events.
"""
from __future__ import annotations

from dataclasses import dataclass

from exchange.commands import CancelOrder, Command, NewOrder, ReduceOrder, ReplaceOrder
from exchange.events import Event, OrderAccepted, OrderCancelled, OrderReduced, OrderRejected, Trade
from exchange.orders import OrderType, SelfTradeMode, Side

REMAINDER = {OrderType.MARKET: "market_remainder", OrderType.IOC: "ioc_remainder"}


def describe(event: Event) -> tuple:
    """Engine event -> the reference's tuple form."""
    if isinstance(event, OrderAccepted):
        return ("accepted", event.order.id, event.quantity)
    if isinstance(event, Trade):
        return ("trade", event.taker_order_id, event.maker_order_id, event.price, event.quantity)
    if isinstance(event, OrderCancelled):
        return ("cancelled", event.order_id, event.reason, event.remaining)
    if isinstance(event, OrderReduced):
        return ("reduced", event.order_id, event.reduced_by, event.remaining, event.reason)
    if isinstance(event, OrderRejected):
        return ("rejected", event.order_id, event.reason)
    raise AssertionError(event)


@dataclass
class RefOrder:
    id: str
    side: Side
    type: OrderType
    price: int | None
    remaining: int
    owner: str
    mode: SelfTradeMode
    arrival: int


class ReferenceMatcher:
    def __init__(self, default_mode: SelfTradeMode = SelfTradeMode.CANCEL_NEWEST) -> None:
        self.resting: list[RefOrder] = []
        self.arrivals = 0
        self.default_mode = default_mode

    # ---------------------------------------------------------------- commands

    def apply(self, command: Command) -> list[tuple]:
        if isinstance(command, NewOrder):
            return self.new(command.order_id, command.side, command.order_type, command.quantity, command.price,
                            command.owner, command.self_trade or self.default_mode)
        found = self.find(command.order_id)
        name = {CancelOrder: "cancel", ReduceOrder: "reduce", ReplaceOrder: "replace"}[type(command)]
        if found is None:
            return [("rejected", command.order_id, "unknown_order")]
        if isinstance(command, CancelOrder):
            self.resting.remove(found)
            return [("cancelled", found.id, "requested", found.remaining)]
        if isinstance(command, ReduceOrder):
            if command.reduce_by >= found.remaining:
                self.resting.remove(found)
                return [("cancelled", found.id, "reduced_to_zero", found.remaining)]
            found.remaining -= command.reduce_by
            return [("reduced", found.id, command.reduce_by, found.remaining, "requested")]
        assert name == "replace"
        if self.find(command.new_order_id) is not None:
            return [("rejected", command.order_id, "duplicate_order_id")]
        if found.type is OrderType.POST_ONLY and self.crossing(found.side, command.price):
            return [("rejected", command.order_id, "post_only_would_take")]
        self.resting.remove(found)
        events = [("cancelled", found.id, "replaced", found.remaining)]
        return events + self.new(command.new_order_id, found.side, found.type, command.quantity, command.price,
                                 found.owner, found.mode)

    def new(self, order_id: str, side: Side, kind: OrderType, quantity: int, price: int | None, owner: str,
            mode: SelfTradeMode) -> list[tuple]:
        if self.find(order_id) is not None:
            return [("rejected", order_id, "duplicate_order_id")]
        if kind is OrderType.POST_ONLY and self.crossing(side, price):
            return [("rejected", order_id, "post_only_would_take")]
        if kind is OrderType.FOK and not self.fillable(side, price, quantity, owner, mode):
            return [("rejected", order_id, "fok_not_fillable")]
        events: list[tuple] = [("accepted", order_id, quantity)]
        remaining = quantity
        while remaining:
            maker = self.best_crossing(side, price)
            if maker is None:
                break
            if maker.owner == owner:
                remaining, keep_going = self.self_trade(order_id, remaining, maker, mode, events)
                if not keep_going:
                    return events
                continue
            fill = min(remaining, maker.remaining)
            remaining -= fill
            maker.remaining -= fill
            events.append(("trade", order_id, maker.id, maker.price, fill))
            if maker.remaining == 0:
                self.resting.remove(maker)
        if remaining and kind in (OrderType.LIMIT, OrderType.POST_ONLY):
            self.arrivals += 1
            self.resting.append(RefOrder(order_id, side, kind, price, remaining, owner, mode, self.arrivals))
        elif remaining:
            events.append(("cancelled", order_id, REMAINDER[kind], remaining))
        return events

    def self_trade(self, taker_id: str, remaining: int, maker: RefOrder, mode: SelfTradeMode,
                   events: list[tuple]) -> tuple[int, bool]:
        if mode in (SelfTradeMode.CANCEL_OLDEST, SelfTradeMode.CANCEL_BOTH):
            self.resting.remove(maker)
            events.append(("cancelled", maker.id, "self_trade", maker.remaining))
            if mode is SelfTradeMode.CANCEL_OLDEST:
                return remaining, True
        elif mode is SelfTradeMode.DECREMENT_AND_CANCEL:
            overlap = min(remaining, maker.remaining)
            if maker.remaining > overlap:
                maker.remaining -= overlap
                events.append(("reduced", maker.id, overlap, maker.remaining, "self_trade"))
            else:
                self.resting.remove(maker)
                events.append(("cancelled", maker.id, "self_trade", maker.remaining))
            if remaining > overlap:
                events.append(("reduced", taker_id, overlap, remaining - overlap, "self_trade"))
                return remaining - overlap, True
        events.append(("cancelled", taker_id, "self_trade", remaining))
        return remaining, False

    # ------------------------------------------------------------- linear scans

    def find(self, order_id: str) -> RefOrder | None:
        return next((o for o in self.resting if o.id == order_id), None)

    def crosses(self, taker_side: Side, limit: int | None, maker: RefOrder) -> bool:
        if maker.side is taker_side:
            return False
        if limit is None:
            return True
        assert maker.price is not None          # only priced orders rest
        return maker.price <= limit if taker_side is Side.BUY else maker.price >= limit

    def priority(self, maker: RefOrder) -> tuple[int, int]:
        assert maker.price is not None          # only priced orders rest
        return (maker.price if maker.side is Side.SELL else -maker.price, maker.arrival)

    def crossing_in_priority(self, side: Side, limit: int | None) -> list[RefOrder]:
        return sorted((o for o in self.resting if self.crosses(side, limit, o)), key=self.priority)

    def best_crossing(self, side: Side, limit: int | None) -> RefOrder | None:
        candidates = self.crossing_in_priority(side, limit)
        return candidates[0] if candidates else None

    def crossing(self, side: Side, limit: int | None) -> bool:
        return self.best_crossing(side, limit) is not None

    def fillable(self, side: Side, limit: int | None, quantity: int, owner: str, mode: SelfTradeMode) -> bool:
        for maker in self.crossing_in_priority(side, limit):
            if maker.owner == owner:
                if mode is SelfTradeMode.CANCEL_OLDEST:
                    continue
                return False
            quantity -= maker.remaining
            if quantity <= 0:
                return True
        return False

    def book(self) -> dict[str, list[tuple[str, int | None, int]]]:
        """L3 in priority order: (id, price, remaining)."""
        return {name: [(o.id, o.price, o.remaining)
                       for o in sorted((o for o in self.resting if o.side is side), key=self.priority)]
                for name, side in (("bids", Side.BUY), ("asks", Side.SELL))}
