"""What an operation caused, in the order it happened; each event converts to a plain dict.

Events are deterministic values: the same commands in the same order give equal
events (compare with `to_dict()` or `==`). Trade ids are derived from the taker and
maker order ids, so every node names a trade the same way.
"""
from __future__ import annotations

from typing import Any

from exchange.orders import Order, Side, _plain_key


class Event:
    """Base class: `kind` names the event in its dict form."""

    __slots__ = ()
    kind = "event"

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(self.kind)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class OrderAccepted(Event):
    """The order passed validation and entered matching. Holds the order; its identity fields never change."""

    __slots__ = ("order", "quantity")
    kind = "accepted"

    def __init__(self, order: Order, quantity: int) -> None:
        self.order = order
        self.quantity = quantity

    def to_dict(self) -> dict[str, Any]:
        order = self.order
        return {"type": self.kind, "order_id": order.id, "market": order.market, "side": order.side.value,
                "order_type": order.type.value, "price": order.price, "quantity": self.quantity,
                "owner": order.owner, "created_key": _plain_key(order.created_key),
                "self_trade": order.self_trade.value}


class Trade(Event):
    """A fill at the resting (maker) order's price; remainders are as they were right after it."""

    __slots__ = ("price", "quantity", "taker", "maker", "taker_remaining", "maker_remaining")
    kind = "trade"

    def __init__(self, price: int, quantity: int, taker: Order, maker: Order) -> None:
        self.price = price
        self.quantity = quantity
        self.taker = taker            # only the orders' fixed fields (id, side, owner, market) are read later
        self.maker = maker
        self.taker_remaining = taker.remaining
        self.maker_remaining = maker.remaining

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


class OrderCancelled(Event):
    """The order left the book (or never rested) with `remaining` unfilled; `reason` says why."""

    __slots__ = ("order_id", "remaining", "reason")
    kind = "cancelled"

    def __init__(self, order_id: str, remaining: int, reason: str) -> None:
        self.order_id = order_id
        self.remaining = remaining
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "order_id": self.order_id, "remaining": self.remaining, "reason": self.reason}


class OrderRejected(Event):
    """An operation that changed nothing; `reason` is a stable code the API maps to 422."""

    __slots__ = ("operation", "order_id", "reason")
    kind = "rejected"

    def __init__(self, operation: str, order_id: object, reason: str) -> None:
        self.operation = operation
        self.order_id = order_id
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        order_id = self.order_id if isinstance(self.order_id, (str, int)) else repr(self.order_id)
        return {"type": self.kind, "operation": self.operation, "order_id": order_id, "reason": self.reason}


class OrderReduced(Event):
    """A resting order shrank by `reduced_by` lots, keeping its place in the queue."""

    __slots__ = ("order_id", "reduced_by", "remaining", "reason")
    kind = "reduced"

    def __init__(self, order_id: str, reduced_by: int, remaining: int, reason: str) -> None:
        self.order_id = order_id
        self.reduced_by = reduced_by
        self.remaining = remaining
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "order_id": self.order_id, "reduced_by": self.reduced_by,
                "remaining": self.remaining, "reason": self.reason}
