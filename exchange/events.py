"""What an operation caused, in the order it happened: immutable records that convert to plain dicts.

Events are deterministic values: the same commands in the same order give events
with equal `to_dict()`. Trade ids are derived from the taker and maker order ids,
so every node names a trade the same way. They are NamedTuples because the engine
creates several per operation and a tuple is the cheapest immutable record; the
engine builds them with `tuple.__new__(Cls, (...))` to skip the Python-level
constructor, anyone else can call them normally.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Union

from exchange.orders import Order, Side, _plain_key


class OrderAccepted(NamedTuple):
    """The order passed validation and entered matching. `order` is live; its identity fields never change."""

    order: Order
    quantity: int
    kind = "accepted"

    def to_dict(self) -> dict[str, Any]:
        order = self.order
        return {"type": self.kind, "order_id": order.id, "market": order.market, "side": order.side.value,
                "order_type": order.type.value, "price": order.price, "quantity": self.quantity,
                "owner": order.owner, "created_key": _plain_key(order.created_key),
                "self_trade": order.self_trade.value}


class Trade(NamedTuple):
    """A fill at the resting (maker) order's price; remainders are as they were right after it."""

    price: int
    quantity: int
    taker: Order            # only the orders' fixed fields (id, side, owner, market) are read later
    maker: Order
    taker_remaining: int
    maker_remaining: int
    kind = "trade"

    @property
    def id(self) -> str:
        return f"{self.taker.id}:{self.maker.id}"

    @property
    def market(self) -> str:
        return self.taker.market

    @property
    def taker_order_id(self) -> str:
        return self.taker.id

    @property
    def maker_order_id(self) -> str:
        return self.maker.id

    @property
    def taker_side(self) -> Side:
        return self.taker.side

    @property
    def buy_order_id(self) -> str:
        return self.taker.id if self.taker.side is Side.BUY else self.maker.id

    @property
    def sell_order_id(self) -> str:
        return self.maker.id if self.taker.side is Side.BUY else self.taker.id

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "id": self.id, "market": self.market, "price": self.price,
                "quantity": self.quantity, "taker_order_id": self.taker.id, "maker_order_id": self.maker.id,
                "buy_order_id": self.buy_order_id, "sell_order_id": self.sell_order_id,
                "taker_side": self.taker.side.value, "taker_owner": self.taker.owner,
                "maker_owner": self.maker.owner, "taker_remaining": self.taker_remaining,
                "maker_remaining": self.maker_remaining}


class OrderCancelled(NamedTuple):
    """The order left the book (or never rested) with `remaining` unfilled; `reason` says why."""

    order_id: str
    remaining: int
    reason: str
    kind = "cancelled"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "order_id": self.order_id, "remaining": self.remaining, "reason": self.reason}


class OrderRejected(NamedTuple):
    """An operation that changed nothing; `reason` is a stable code the API maps to 422."""

    operation: str
    order_id: object
    reason: str
    kind = "rejected"

    def to_dict(self) -> dict[str, Any]:
        order_id = self.order_id if isinstance(self.order_id, (str, int)) else repr(self.order_id)
        return {"type": self.kind, "operation": self.operation, "order_id": order_id, "reason": self.reason}


class OrderReduced(NamedTuple):
    """An order shrank by `reduced_by` lots; a resting one keeps its place in the queue."""

    order_id: str
    reduced_by: int
    remaining: int
    reason: str
    kind = "reduced"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "order_id": self.order_id, "reduced_by": self.reduced_by,
                "remaining": self.remaining, "reason": self.reason}


Event = Union[OrderAccepted, Trade, OrderCancelled, OrderRejected, OrderReduced]
