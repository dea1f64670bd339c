"""Orders: the vocabulary (side, type, status, self-trade mode) and the mutable order record.

Prices are integer ticks and quantities integer lots. `created_key` is whatever the
caller orders events by (the replicated layer passes `(lamport, origin, seq)`); the
engine stores it untouched so the book digest covers it. Time priority inside the
engine is arrival order, which in the replicated layer is key order.
"""
from __future__ import annotations

from enum import Enum
from typing import Type, TypedDict, TypeVar

from exchange.errors import InvalidCommand


class Side(Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(Enum):
    LIMIT = "limit"          # good till cancelled; the remainder rests
    MARKET = "market"        # no price; the remainder is cancelled
    IOC = "ioc"              # immediate or cancel: limit price, remainder cancelled
    FOK = "fok"              # fill or kill: whole quantity now or nothing
    POST_ONLY = "post_only"  # rests or is rejected; never takes


class OrderStatus(Enum):
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class SelfTradeMode(Enum):
    """What happens when a taker meets a resting order of the same owner (the taker's mode decides)."""

    CANCEL_NEWEST = "cancel_newest"                # cancel the taker's remainder
    CANCEL_OLDEST = "cancel_oldest"                # cancel the resting order, keep matching
    CANCEL_BOTH = "cancel_both"                    # cancel both
    DECREMENT_AND_CANCEL = "decrement_and_cancel"  # shrink both by the smaller size; the smaller one is cancelled


_E = TypeVar("_E", bound=Enum)


def parse_enum(kind: Type[_E], value: object, field: str) -> _E:
    """Map a user-facing string ("buy", "ioc", ...) to its enum member, or raise InvalidCommand."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (ValueError, TypeError):
        allowed = ", ".join(member.value for member in kind)
        raise InvalidCommand(f"invalid_{field}", f"{field} must be one of: {allowed}", field) from None


def order_id_from_key(key: tuple[int, str, int]) -> str:
    """The order id the replicated layer derives from an event key `(lamport, origin, seq)`."""
    lamport, origin, seq = key
    return f"{lamport}-{origin}-{seq}"


class OrderDict(TypedDict):
    """`Order.to_dict()`: enums as their values, price and sizes integer ticks and lots."""

    id: str
    market: str
    side: str
    type: str
    price: int | None
    quantity: int
    remaining: int
    filled: int
    owner: str
    created_key: object
    self_trade: str
    status: str
    reason: str | None


class Order:
    """One order's state; the engine mutates `remaining`, `quantity` (on reduce), `status` and `reason`.

    There is deliberately no `__init__`: `Order()` is then a single C-level allocation,
    and the engine, which makes one per order placed, sets the slots itself. Everyone
    else builds a complete order with `Order.new(...)`.
    """

    __slots__ = ("id", "market", "side", "type", "price", "quantity", "remaining", "owner",
                 "created_key", "self_trade", "status", "reason")
    id: str
    market: str
    side: Side
    type: OrderType
    price: int | None
    quantity: int
    remaining: int
    owner: str
    created_key: object
    self_trade: SelfTradeMode
    status: OrderStatus
    reason: str | None

    @classmethod
    def new(cls, order_id: str, market: str, side: Side, order_type: OrderType, price: int | None,
            quantity: int, owner: str, created_key: object, self_trade: SelfTradeMode) -> Order:
        """An open, unfilled order."""
        order = cls()
        order.id = order_id
        order.market = market
        order.side = side
        order.type = order_type
        order.price = price
        order.quantity = order.remaining = quantity
        order.owner = owner
        order.created_key = created_key
        order.self_trade = self_trade
        order.status = OrderStatus.OPEN
        order.reason = None
        return order

    @property
    def filled(self) -> int:
        return self.quantity - self.remaining

    def to_dict(self) -> OrderDict:
        """Plain data (JSON and msgpack friendly); price and sizes stay integer ticks and lots."""
        return {
            "id": self.id, "market": self.market, "side": self.side.value, "type": self.type.value,
            "price": self.price, "quantity": self.quantity, "remaining": self.remaining,
            "filled": self.quantity - self.remaining, "owner": self.owner,
            "created_key": _plain_key(self.created_key), "self_trade": self.self_trade.value,
            "status": self.status.value, "reason": self.reason,
        }

    def __repr__(self) -> str:
        return (f"Order({self.id!r} {self.side.value} {self.type.value} {self.remaining}/{self.quantity}"
                f" @ {self.price} {self.owner!r} {self.status.value})")


def _plain_key(key: object) -> object:
    return list(key) if isinstance(key, tuple) else key
