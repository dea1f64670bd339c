"""Commands the engine applies: new order, cancel, reduce, replace; plain-dict round trip for replication.

Commands carry integer ticks and lots (parse user decimals with `Market.parse_price`
/ `parse_qty` first). `command_from_dict` checks shape and types and raises
InvalidCommand with a reason code; value rules (band, sizes, duplicates) are the
engine's, which answers with an OrderRejected event instead of raising.
"""
from __future__ import annotations

from enum import Enum
from typing import Callable, TypedDict, TypeVar, overload

from exchange.errors import InvalidCommand
from exchange.orders import OrderType, SelfTradeMode, Side, _plain_key, parse_enum

_E = TypeVar("_E", bound=Enum)


class NewOrderDict(TypedDict):
    """`NewOrder.to_dict()`: enum fields as their values (a field that is no enum member as it was given)."""

    op: str
    order_id: str
    side: object
    order_type: object
    quantity: int
    price: int | None
    owner: str
    created_key: object
    self_trade: object


class CancelOrderDict(TypedDict):
    op: str
    order_id: str
    owner: str | None


class ReduceOrderDict(TypedDict):
    op: str
    order_id: str
    reduce_by: int
    owner: str | None


class ReplaceOrderDict(TypedDict):
    op: str
    order_id: str
    new_order_id: str
    quantity: int
    price: int | None
    created_key: object
    owner: str | None


class NewOrder:
    """Place an order. `self_trade` None means the market's default mode."""

    __slots__ = ("order_id", "side", "order_type", "quantity", "price", "owner", "created_key", "self_trade")
    op = "new"

    def __init__(self, order_id: str, side: Side, order_type: OrderType, quantity: int, price: int | None = None,
                 owner: str = "", created_key: object = None, self_trade: SelfTradeMode | None = None) -> None:
        self.order_id = order_id
        self.side = side
        self.order_type = order_type
        self.quantity = quantity
        self.price = price
        self.owner = owner
        self.created_key = created_key
        self.self_trade = self_trade

    def to_dict(self) -> NewOrderDict:
        return {"op": self.op, "order_id": self.order_id, "side": _value(self.side),
                "order_type": _value(self.order_type), "quantity": self.quantity, "price": self.price,
                "owner": self.owner, "created_key": _plain_key(self.created_key),
                "self_trade": None if self.self_trade is None else _value(self.self_trade)}


class CancelOrder:
    """Cancel a resting order; with `owner` set, only that owner may."""

    __slots__ = ("order_id", "owner")
    op = "cancel"

    def __init__(self, order_id: str, owner: str | None = None) -> None:
        self.order_id = order_id
        self.owner = owner

    def to_dict(self) -> CancelOrderDict:
        return {"op": self.op, "order_id": self.order_id, "owner": self.owner}


class ReduceOrder:
    """Shrink a resting order by `reduce_by` lots, keeping time priority; reducing to nothing cancels it."""

    __slots__ = ("order_id", "reduce_by", "owner")
    op = "reduce"

    def __init__(self, order_id: str, reduce_by: int, owner: str | None = None) -> None:
        self.order_id = order_id
        self.reduce_by = reduce_by
        self.owner = owner

    def to_dict(self) -> ReduceOrderDict:
        return {"op": self.op, "order_id": self.order_id, "reduce_by": self.reduce_by, "owner": self.owner}


class ReplaceOrder:
    """Cancel a resting order and place a new one (same side, type, owner) under a new id; priority is lost."""

    __slots__ = ("order_id", "new_order_id", "quantity", "price", "created_key", "owner")
    op = "replace"

    def __init__(self, order_id: str, new_order_id: str, quantity: int, price: int | None,
                 created_key: object = None, owner: str | None = None) -> None:
        self.order_id = order_id
        self.new_order_id = new_order_id
        self.quantity = quantity
        self.price = price
        self.created_key = created_key
        self.owner = owner

    def to_dict(self) -> ReplaceOrderDict:
        return {"op": self.op, "order_id": self.order_id, "new_order_id": self.new_order_id,
                "quantity": self.quantity, "price": self.price,
                "created_key": _plain_key(self.created_key), "owner": self.owner}


Command = NewOrder | CancelOrder | ReduceOrder | ReplaceOrder


def command_from_dict(data: object) -> Command:
    """Rebuild a command from its `to_dict()` form; raise InvalidCommand (with a code) on bad input."""
    if not isinstance(data, dict):
        raise InvalidCommand("invalid_command", "a command must be a map", None)
    builder = _BUILDERS.get(data.get("op"))
    if builder is None:
        raise InvalidCommand("unknown_operation", f"unknown operation {data.get('op')!r}", "op")
    return builder(_Fields(data))


class _Fields:
    """Typed reads of one command dict, each raising InvalidCommand naming the field."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, object]) -> None:
        self.data = data

    @overload
    def text(self, name: str) -> str: ...
    @overload
    def text(self, name: str, optional: bool) -> str | None: ...

    def text(self, name: str, optional: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise InvalidCommand(f"invalid_{name}", f"{name} must be a string", name)
        return value

    @overload
    def integer(self, name: str) -> int: ...
    @overload
    def integer(self, name: str, optional: bool) -> int | None: ...

    def integer(self, name: str, optional: bool = False) -> int | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if isinstance(value, float):
            raise InvalidCommand("float_not_allowed", f"{name} must be an integer number of units", name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidCommand(f"invalid_{name}", f"{name} must be an integer", name)
        return value

    @overload
    def choice(self, name: str, kind: type[_E]) -> _E: ...
    @overload
    def choice(self, name: str, kind: type[_E], optional: bool) -> _E | None: ...

    def choice(self, name: str, kind: type[_E], optional: bool = False) -> _E | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        return parse_enum(kind, value, name)

    def key(self) -> object:
        value = self.data.get("created_key")
        return tuple(value) if isinstance(value, list) else value


def _new(f: _Fields) -> NewOrder:
    return NewOrder(f.text("order_id"), f.choice("side", Side), f.choice("order_type", OrderType),
                    f.integer("quantity"), f.integer("price", optional=True), f.text("owner"), f.key(),
                    f.choice("self_trade", SelfTradeMode, optional=True))


def _cancel(f: _Fields) -> CancelOrder:
    return CancelOrder(f.text("order_id"), f.text("owner", optional=True))


def _reduce(f: _Fields) -> ReduceOrder:
    return ReduceOrder(f.text("order_id"), f.integer("reduce_by"), f.text("owner", optional=True))


def _replace(f: _Fields) -> ReplaceOrder:
    return ReplaceOrder(f.text("order_id"), f.text("new_order_id"), f.integer("quantity"),
                        f.integer("price", optional=True), f.key(), f.text("owner", optional=True))


_BUILDERS: dict[object, Callable[[_Fields], Command]] = {
    "new": _new, "cancel": _cancel, "reduce": _reduce, "replace": _replace,
}


def _value(member: object) -> object:
    return getattr(member, "value", member)
