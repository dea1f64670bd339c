"""What an operation caused, in the order it happened: small records that convert to plain dicts.

Events are deterministic values: the same commands in the same order give events
that compare equal and have equal `to_dict()`. Trade ids are derived from the taker
and maker order ids, so every node names a trade the same way.

The engine creates one to three of these per operation, so they are built the
cheapest way CPython offers: a `__slots__` class with no Python `__init__`, whose
`Cls()` is a single C-level allocation, then plain slot stores (cheaper than a
NamedTuple built through `tuple.__new__`). Code off the hot path builds them with
`Cls.of(field, ...)`. Treat them as read-only once returned.
"""
from __future__ import annotations

from typing import TypedDict, TypeVar, Union

from exchange.orders import Order, Side, _plain_key

_R = TypeVar("_R", bound="EventRecord")


class EventRecord:
    """Base of every event: positional `of()`, value equality and a readable repr over the slots."""

    __slots__ = ()
    kind = ""

    @classmethod
    def of(cls: type[_R], *values: object) -> _R:
        """An event from its fields in slot order (the readable constructor for code off the hot path)."""
        if len(values) != len(cls.__slots__):
            raise TypeError(f"{cls.__name__}.of() takes {len(cls.__slots__)} fields, got {len(values)}")
        record = cls()
        name: str
        for name, value in zip(cls.__slots__, values):
            setattr(record, name, value)
        return record

    def fields(self) -> tuple[object, ...]:
        names: tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.fields() == other.fields()

    # equal by value but mutable in principle, so unhashable; the ignore: typeshed declares object.__hash__ a method
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({shown})"


class AcceptedDict(TypedDict):
    type: str
    order_id: str
    market: str
    side: str
    order_type: str
    price: int | None
    quantity: int
    owner: str
    created_key: object
    self_trade: str


class TradeDict(TypedDict):
    type: str
    id: str
    market: str
    price: int
    quantity: int
    taker_order_id: str
    maker_order_id: str
    buy_order_id: str
    sell_order_id: str
    taker_side: str
    taker_owner: str
    maker_owner: str
    taker_remaining: int
    maker_remaining: int


class CancelledDict(TypedDict):
    type: str
    order_id: str
    remaining: int
    reason: str


class RejectedDict(TypedDict):
    type: str
    operation: str
    order_id: str | int
    reason: str


class ReducedDict(TypedDict):
    type: str
    order_id: str
    reduced_by: int
    remaining: int
    reason: str


class OrderAccepted(EventRecord):
    """The order passed validation and entered matching. `order` is live; its identity fields never change."""

    __slots__ = ("order", "quantity")
    order: Order
    quantity: int
    kind = "accepted"

    def to_dict(self) -> AcceptedDict:
        order = self.order
        return {"type": self.kind, "order_id": order.id, "market": order.market, "side": order.side.value,
                "order_type": order.type.value, "price": order.price, "quantity": self.quantity,
                "owner": order.owner, "created_key": _plain_key(order.created_key),
                "self_trade": order.self_trade.value}


class Trade(EventRecord):
    """A fill at the resting (maker) order's price; remainders are as they were right after it."""

    __slots__ = ("price", "quantity", "taker", "maker", "taker_remaining", "maker_remaining")
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

    def to_dict(self) -> TradeDict:
        return {"type": self.kind, "id": self.id, "market": self.market, "price": self.price,
                "quantity": self.quantity, "taker_order_id": self.taker.id, "maker_order_id": self.maker.id,
                "buy_order_id": self.buy_order_id, "sell_order_id": self.sell_order_id,
                "taker_side": self.taker.side.value, "taker_owner": self.taker.owner,
                "maker_owner": self.maker.owner, "taker_remaining": self.taker_remaining,
                "maker_remaining": self.maker_remaining}


class OrderCancelled(EventRecord):
    """The order left the book (or never rested) with `remaining` unfilled; `reason` says why."""

    __slots__ = ("order_id", "remaining", "reason")
    order_id: str
    remaining: int
    reason: str
    kind = "cancelled"

    def to_dict(self) -> CancelledDict:
        return {"type": self.kind, "order_id": self.order_id, "remaining": self.remaining, "reason": self.reason}


class OrderRejected(EventRecord):
    """An operation that changed nothing; `reason` is a stable code the API maps to 422."""

    __slots__ = ("operation", "order_id", "reason")
    operation: str
    order_id: object
    reason: str
    kind = "rejected"

    def to_dict(self) -> RejectedDict:
        order_id = self.order_id if isinstance(self.order_id, (str, int)) else repr(self.order_id)
        return {"type": self.kind, "operation": self.operation, "order_id": order_id, "reason": self.reason}


class OrderReduced(EventRecord):
    """An order shrank by `reduced_by` lots; a resting one keeps its place in the queue."""

    __slots__ = ("order_id", "reduced_by", "remaining", "reason")
    order_id: str
    reduced_by: int
    remaining: int
    reason: str
    kind = "reduced"

    def to_dict(self) -> ReducedDict:
        return {"type": self.kind, "order_id": self.order_id, "reduced_by": self.reduced_by,
                "remaining": self.remaining, "reason": self.reason}


Event = Union[OrderAccepted, Trade, OrderCancelled, OrderRejected, OrderReduced]
